"""A gRPC server factory: thread pool, message limits, health and reflection built in.

With `GrpcSecurity`, the port serves TLS and, with `auth`, every RPC but health and
reflection needs credentials whose roles allow it (see `shared.security`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from shared.errors import ConfigError, Unavailable

if TYPE_CHECKING:
    from shared.settings import GrpcSecurity

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ServiceBinding:
    """One servicer to mount: its `add_XServicer_to_server` function and its full name."""

    add_to_server: Callable[[Any, grpc.Server], None]
    servicer: Any
    full_name: str
    # The pool holding the service's descriptors, for reflection; None is protobuf's default.
    pool: descriptor_pool.DescriptorPool | None = None


def message_size_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """Channel options lifting gRPC's 4 MiB receive default, for servers and clients alike."""
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]


def build_server(
    address: str,
    bindings: Sequence[ServiceBinding],
    *,
    max_workers: int = 16,
    max_concurrent_rpcs: int | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    security: GrpcSecurity | None = None,
    reuse_port: bool | None = None,
) -> tuple[grpc.Server, health.HealthServicer, int]:
    """Build (not start) a server with the given services plus grpc.health.v1 and reflection.

    Every service starts NOT_SERVING; call `health.set(name, SERVING)` once it is ready.
    The overall health ("") is SERVING from the start, so liveness probes pass.

    Args:
        address: host:port to listen on (port 0: any free port).
        bindings: The services to mount.
        max_workers: Threads serving calls.
        max_concurrent_rpcs: Calls beyond this are refused with RESOURCE_EXHAUSTED.
        max_message_bytes: The largest message received or sent.
        security: TLS and auth; None (or both off) serves plaintext to anybody.
        reuse_port: SO_REUSEPORT on (processes share the port) or off; None: gRPC's default.

    Returns:
        The server, its health servicer and the bound port (useful when `address` ends ":0").

    Raises:
        Unavailable: The address could not be bound.
        ConfigError: Auth without TLS, TLS without a certificate and key, or a credential
            file that cannot be read or is malformed.

    """
    interceptors = _auth_interceptors(security, bindings)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        options=message_size_options(max_message_bytes)
        + ([] if reuse_port is None else [("grpc.so_reuseport", int(reuse_port))]),
        maximum_concurrent_rpcs=max_concurrent_rpcs,
        interceptors=interceptors or None,
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for binding in bindings:
        binding.add_to_server(binding.servicer, server)
        health_servicer.set(binding.full_name, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    _enable_reflection(server, bindings)
    try:
        if security is not None and security.tls:
            port = server.add_secure_port(address, _server_credentials(security))
        else:
            port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise Unavailable(f"cannot bind gRPC server to {address}: {exc}") from exc
    return server, health_servicer, port


def _auth_interceptors(
    security: GrpcSecurity | None, bindings: Sequence[ServiceBinding]
) -> list[grpc.ServerInterceptor]:
    """The auth interceptor when `security.auth` (after checking TLS is on), else none."""
    if security is None or not security.auth:
        return []
    if not security.tls:
        raise ConfigError(
            "gRPC auth needs TLS (set SECURITY__TLS=true with a certificate and key): "
            "bearer tokens over plaintext would be readable by anyone on the path"
        )
    # Imported only when used: light commands build no secured server.
    from shared.security.interceptor import Authenticator, AuthInterceptor
    from shared.security.roles import unmapped

    for binding in bindings:
        service = (binding.pool or descriptor_pool.Default()).FindServiceByName(binding.full_name)
        missing = unmapped(f"/{binding.full_name}/{m.name}" for m in service.methods)
        if missing:
            log.warning("methods without a policy entry are refused", extra={"methods": missing})
    return [AuthInterceptor(Authenticator.from_security(security))]


def _server_credentials(security: GrpcSecurity) -> grpc.ServerCredentials:
    """TLS with the server's certificate; client certificates verified against the CA.

    gRPC Python cannot ask for an optional client certificate (without
    require_client_auth it never requests one), so client certificates are required when
    asked for (`require_client_certificate`: mutual TLS) or when they are the only
    credential: auth on, a CA, and no token source.
    """
    if security.cert_file is None or security.key_file is None:
        raise ConfigError("gRPC TLS needs cert_file and key_file (the server's certificate)")
    key = read_credential(security.key_file, "TLS private key")
    cert = read_credential(security.cert_file, "TLS certificate")
    ca = read_credential(security.ca_file, "CA certificate") if security.ca_file else None
    _check_pem(security, cert, key, ca)
    if security.require_client_certificate and ca is None:
        raise ConfigError("require_client_certificate needs ca_file (the clients' CA)")
    tokens = security.token_public_key_file or security.static_tokens_file
    only_credential = security.auth and not tokens
    require = ca is not None and (security.require_client_certificate or only_credential)
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=require
    )


def _check_pem(security: GrpcSecurity, cert: bytes, key: bytes, ca: bytes | None) -> None:
    """Parse the files first: gRPC only reports a bad one as a failure to bind the port.

    Raises:
        ConfigError: A file holds no PEM certificate (key), or the key is not the
            certificate's.

    """
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        leaf = x509.load_pem_x509_certificates(cert)[0]
    except ValueError:
        raise ConfigError(f"{security.cert_file} holds no PEM certificate") from None
    try:
        private = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"{security.key_file} holds no unencrypted PEM private key") from None
    if private.public_key() != leaf.public_key():
        raise ConfigError(f"{security.key_file} is not the key of {security.cert_file}")
    if ca is not None:
        try:
            x509.load_pem_x509_certificates(ca)
        except ValueError:
            raise ConfigError(f"{security.ca_file} holds no PEM certificate") from None


def read_credential(path: Path, what: str) -> bytes:
    """The bytes of a certificate or key file.

    Raises:
        ConfigError: The file cannot be read or is empty.

    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc}") from None
    if not data.strip():
        raise ConfigError(f"the {what} {path} is empty")
    return data


def _enable_reflection(server: grpc.Server, bindings: Sequence[ServiceBinding]) -> None:
    """Serve reflection from one pool holding every mounted service, private pools included."""
    services = [
        descriptor_pool.Default().FindServiceByName(health.SERVICE_NAME),
        descriptor_pool.Default().FindServiceByName(reflection.SERVICE_NAME),
    ] + [(b.pool or descriptor_pool.Default()).FindServiceByName(b.full_name) for b in bindings]
    merged = descriptor_pool.DescriptorPool()
    added: set[str] = set()
    for service in services:
        _add_file(merged, service.file, added)
    reflection.enable_server_reflection([s.full_name for s in services], server, pool=merged)


def _add_file(pool: descriptor_pool.DescriptorPool, file: Any, added: set[str]) -> None:
    """Add `file` to `pool` after its dependencies (a pool refuses unresolved imports)."""
    if file.name in added:
        return
    for dependency in file.dependencies:
        _add_file(pool, dependency, added)
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    pool.Add(proto)
    added.add(file.name)


def mark_serving(health_servicer: health.HealthServicer, names: Sequence[str]) -> None:
    """Flip services to SERVING once their dependencies are ready."""
    for name in names:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)


def mark_draining(health_servicer: health.HealthServicer) -> None:
    """Report NOT_SERVING for everything, so load balancers stop sending before shutdown."""
    health_servicer.enter_graceful_shutdown()
