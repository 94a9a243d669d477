"""The ingestion service's public names, importable without faust or numba."""

# The gRPC service (and health name) of ingestion.
SERVICE = "streamlearn.v1.Ingestion"
