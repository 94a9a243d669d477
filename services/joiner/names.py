"""The joiner's public names, importable without Kafka."""

# The name the joiner's gRPC health service reports (it serves no other gRPC API).
HEALTH_NAME = "streamlearn.joiner"
