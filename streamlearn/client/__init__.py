"""Client SDK of streamlearn: the sample producer and the gRPC inference client."""

from streamlearn.client.inference import InferenceClient
from streamlearn.client.producer import SampleProducer

__all__ = ["InferenceClient", "SampleProducer"]
