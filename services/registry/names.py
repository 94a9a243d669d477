"""The registry's public names, importable without the registry's dependencies."""

# The gRPC service (and health name) of the model registry.
SERVICE = "streamlearn.v1.ModelRegistry"
