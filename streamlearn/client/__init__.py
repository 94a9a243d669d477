"""Client SDK of streamlearn: gRPC inference today; producers arrive with ingestion."""

from streamlearn.client.inference import InferenceClient

__all__ = ["InferenceClient"]
