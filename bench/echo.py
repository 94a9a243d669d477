"""A bare grpcio KServe V2 server that answers every ModelInfer with one fixed response.

The baseline of `bench inference`: what Python gRPC itself costs for the same request and
response shape (one FP32 [1, 1] `score` output, raw contents), with as many worker threads
as the inference service, in its own process. `python -m bench.echo PORT`.
"""

from __future__ import annotations

import sys
from concurrent import futures
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc
from services.inference.settings import InferenceSettings
from shared.onnx_models import OUTPUT

SERVICE = "inference.GRPCInferenceService"


class Echo(grpc_service_pb2_grpc.GRPCInferenceServiceServicer):
    """Answers ModelInfer with the response the service gives the bench's request."""

    def __init__(self) -> None:
        self._reply = pb.ModelInferResponse(model_name="demo", model_version="1")
        self._reply.outputs.add(name=OUTPUT, datatype="FP32", shape=[1, 1])
        self._reply.raw_output_contents.append(np.array([0.5], dtype=np.float32).tobytes())

    def ModelInfer(self, request: Any, context: Any) -> pb.ModelInferResponse:  # noqa: N802
        """The fixed response, with the request's id."""
        reply = pb.ModelInferResponse()
        reply.CopyFrom(self._reply)
        reply.id = request.id
        return reply


def main(port: int) -> None:
    """Serve until terminated."""
    workers = InferenceSettings.model_fields["grpc_workers"].default
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Echo(), server)  # type: ignore[no-untyped-call]
    checker = health.HealthServicer()
    checker.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


if __name__ == "__main__":
    main(int(sys.argv[1]))
