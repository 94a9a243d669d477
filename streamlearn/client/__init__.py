"""Client SDK of streamlearn: the sample producer and the gRPC inference client."""

from streamlearn.client.connection import Connection, from_env
from streamlearn.client.inference import InferenceClient
from streamlearn.client.producer import SampleProducer

__all__ = ["Connection", "InferenceClient", "SampleProducer", "from_env"]
