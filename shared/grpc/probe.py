"""`python -m shared.grpc.probe HOST:PORT [SERVICE] [--ca FILE [--cert FILE --key FILE]]`.

Exits 0 when gRPC health says SERVING. Used by docker compose healthchecks (Kubernetes has
native gRPC probes). `--ca` checks a TLS server (health needs no credentials); `--cert` and
`--key` present a client certificate, for a server that requires one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shared.errors import ConfigError
from shared.grpc.channel import channel_for
from shared.settings import GrpcSecurity


def check(
    address: str, service: str = "", timeout: float = 2.0, security: GrpcSecurity | None = None
) -> bool:
    """True when `service` ("" = the server as a whole) reports SERVING at `address`."""
    with channel_for(address, security) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m shared.grpc.probe", description="exit 0 when gRPC health says SERVING"
    )
    parser.add_argument("address", help="HOST:PORT")
    parser.add_argument("service", nargs="?", default="", help="a service name ('': the server)")
    parser.add_argument("--ca", type=Path, help="the CA certificate of a TLS server (PEM)")
    parser.add_argument("--cert", type=Path, help="a client certificate to present (PEM)")
    parser.add_argument("--key", type=Path, help="the client certificate's key (PEM)")
    parser.add_argument("--server-name", help="the name in the server's certificate")
    arguments = parser.parse_args(argv)
    if (arguments.cert is None) != (arguments.key is None):
        parser.error("--cert and --key go together")
    if arguments.cert is not None and arguments.ca is None:
        parser.error("--cert needs --ca (client certificates only travel over TLS)")
    return arguments


def main(argv: list[str]) -> int:
    """Run the probe; the exit status."""
    arguments = _arguments(argv)
    security = None
    if arguments.ca is not None:
        security = GrpcSecurity(
            tls=True,
            ca_file=arguments.ca,
            cert_file=arguments.cert,
            key_file=arguments.key,
            server_name=arguments.server_name,
        )
    try:
        return 0 if check(arguments.address, arguments.service, security=security) else 1
    except ConfigError as exc:
        print(f"probe: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
