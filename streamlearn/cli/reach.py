"""Commands that need a running service or broker say which, where, and how to start it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from shared.errors import Unavailable

if TYPE_CHECKING:
    from shared.settings import GrpcSecurity

START_SERVICES = "start it with `streamlearn up` (`streamlearn status` shows what runs)"


class ServiceDown(Unavailable):
    """A service (or the broker) a command needs does not answer at its address."""

    def __init__(self, service: str, address: str, fix: str = START_SERVICES) -> None:
        super().__init__(f"{service} is not running at {address}; {fix}")
        self.service = service
        self.address = address


@contextmanager
def needs(service: str, address: str, security: GrpcSecurity | None = None) -> Iterator[None]:
    """Inside the block, failing to reach `service` at `address` raises ServiceDown.

    An Unavailable from a server that does answer (a model not loaded yet, say) is raised
    as it is: only a silent address means the service is not running. `security`: how to
    reach a TLS server (a plaintext handshake with one never succeeds).
    """
    try:
        yield
    except Unavailable as exc:
        if isinstance(exc, ServiceDown) or _answers(address, security):
            raise
        if _accepts(address):  # the port is open: the handshake failed, not the service
            raise Unavailable(_handshake_failed(service, address, security)) from exc
        raise ServiceDown(service, address) from exc


def _handshake_failed(service: str, address: str, security: GrpcSecurity | None) -> str:
    """What to check when a service answers on TCP but no gRPC channel comes up."""
    if security is None or not security.tls:
        return (
            f"{service} at {address} accepts connections but not plaintext gRPC: it is "
            "probably secured; set STREAMLEARN_SECURITY__TLS=true and __CA_FILE "
            "(`source <state>/secrets/<role>.env` for a local `streamlearn up --secure`)"
        )
    return (
        f"{service} at {address} refused the TLS handshake: check STREAMLEARN_SECURITY__CA_FILE "
        "(the CA that signed it), __SERVER_NAME, and __CERT_FILE/__KEY_FILE where it asks "
        "for a client certificate"
    )


def _accepts(address: str) -> bool:
    """Whether a TCP connection to `address` (host:port, [v6]:port) succeeds within 1 s."""
    import socket

    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
            return True
    except (OSError, ValueError):
        return False


def _answers(address: str, security: GrpcSecurity | None = None) -> bool:
    """Something accepts gRPC connections at `address` (whatever its health says)."""
    import grpc  # loaded already by the client that failed

    from shared.grpc.channel import channel_for

    with channel_for(address, security) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=1.0)
        except grpc.FutureTimeoutError:
            return False
    return True
