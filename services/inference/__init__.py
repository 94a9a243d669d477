"""Inference: KServe V2 / Triton gRPC on ONNX Runtime with hot-swapped versions."""
