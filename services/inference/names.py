"""The inference service's public names, importable without ONNX Runtime or torch."""

# The gRPC service (and health name) of the KServe V2 / Triton inference protocol.
SERVICE = "inference.GRPCInferenceService"
