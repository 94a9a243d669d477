"""`python -m shared.grpc.probe HOST:PORT [SERVICE]`: exit 0 when gRPC health says SERVING.

Used by docker compose healthchecks (Kubernetes has native gRPC probes).
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(address: str, service: str = "", timeout: float = 2.0) -> bool:
    """True when `service` ("" = the server as a whole) reports SERVING at `address`."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m shared.grpc.probe HOST:PORT [SERVICE]")
    service = sys.argv[2] if len(sys.argv) == 3 else ""
    sys.exit(0 if check(sys.argv[1], service) else 1)
