"""A gRPC server factory: thread pool, message limits, health and reflection built in."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from shared.errors import Unavailable

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
) -> tuple[grpc.Server, health.HealthServicer, int]:
    """Build (not start) a server with the given services plus grpc.health.v1 and reflection.

    Every service starts NOT_SERVING; call `health.set(name, SERVING)` once it is ready.
    The overall health ("") is SERVING from the start, so liveness probes pass.

    Returns:
        The server, its health servicer and the bound port (useful when `address` ends ":0").

    Raises:
        Unavailable: The address could not be bound.

    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        options=message_size_options(max_message_bytes),
        maximum_concurrent_rpcs=max_concurrent_rpcs,
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for binding in bindings:
        binding.add_to_server(binding.servicer, server)
        health_servicer.set(binding.full_name, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    _enable_reflection(server, bindings)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise Unavailable(f"cannot bind gRPC server to {address}: {exc}") from exc
    return server, health_servicer, port


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
