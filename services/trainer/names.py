"""The trainer's public names, importable without the trainer's heavy dependencies."""

# The name the trainer's gRPC health service reports (it serves no other gRPC API).
HEALTH_NAME = "streamlearn.trainer"
