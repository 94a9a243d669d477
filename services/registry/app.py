"""Wiring of the registry service: store, artifacts, core, gRPC server, event publisher."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from grpc import Server
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import HealthServicer

from services.registry.artifacts import LocalArtifactStore
from services.registry.dbwatch import DatabaseWatch
from services.registry.names import SERVICE as SERVICE
from services.registry.policy import Policy
from services.registry.publisher import EventPublisher
from services.registry.registry import Registry
from services.registry.servicer import RegistryServicer
from services.registry.settings import RegistrySettings
from services.registry.store import Store
from shared.errors import Unavailable
from shared.grpc.server import ServiceBinding, build_server, mark_draining, mark_serving
from shared.kafka.admin import ensure_topics, standard_topics
from shared.kafka.config import producer_config
from streamlearn.v1 import registry_pb2_grpc

log = logging.getLogger(__name__)


@dataclass
class RegistryApp:
    """A built, not yet running, registry service."""

    settings: RegistrySettings
    store: Store
    registry: Registry
    publisher: EventPublisher
    server: Server
    health: HealthServicer
    port: int
    database: DatabaseWatch


def build(settings: RegistrySettings) -> RegistryApp:
    """Open storage, create the model-events topic if missing, and build the server."""
    password = settings.db_password.get_secret_value() if settings.db_password else None
    store = Store(settings.database, password)
    policy = Policy(
        settings.policy_metric,
        settings.policy_lower_is_better,
        settings.policy_min_improvement,
        settings.policy_rollback_tolerance,
    )
    registry = Registry(
        store,
        LocalArtifactStore(settings.resolved_artifact_dir),
        policy,
        settings.max_artifact_bytes,
    )
    events_topic = [
        t for t in standard_topics(settings.topics) if t.name == settings.topics.model_events
    ]
    ensure_topics(AdminClient(settings.kafka.client_config()), events_topic)
    producer = Producer(producer_config(settings.kafka, linger_ms=0))
    publisher = EventPublisher(registry, producer, settings.topics.model_events)
    binding = ServiceBinding(
        registry_pb2_grpc.add_ModelRegistryServicer_to_server,
        RegistryServicer(registry, settings.max_watchers),
        SERVICE,
    )
    # Watch streams each hold a thread while connected: the pool has room for every allowed
    # watcher plus `grpc_workers` threads that stay free for health checks and unary calls.
    server, health, port = build_server(
        f"0.0.0.0:{settings.grpc_port}",
        [binding],
        max_workers=settings.grpc_workers + settings.max_watchers,
        security=settings.security,
    )
    database = DatabaseWatch(
        store.ping, lambda reachable: _set_health(health, reachable), settings.db_check_interval_s
    )
    return RegistryApp(settings, store, registry, publisher, server, health, port, database)


def _set_health(health: HealthServicer, reachable: bool) -> None:
    """The registry service's status follows its database (the overall status stays up)."""
    status = health_pb2.HealthCheckResponse
    health.set(SERVICE, status.SERVING if reachable else status.NOT_SERVING)


def run(app: RegistryApp, stop: threading.Event) -> None:
    """Serve until `stop` is set, collecting garbage and watching the database; then drain."""
    app.publisher.start()
    app.server.start()
    mark_serving(app.health, [SERVICE])
    app.database.start()
    log.info("registry serving", extra={"port": app.port})
    try:
        while not stop.wait(app.settings.gc_interval_s):
            _collect_garbage(app)
    finally:
        app.database.stop()
        mark_draining(app.health)
        app.server.stop(app.settings.drain_grace_s).wait()
        app.publisher.stop()
        app.store.close()
        log.info("registry stopped")


def _collect_garbage(app: RegistryApp) -> None:
    """One retention pass; a database outage skips it (the next pass catches up)."""
    try:
        deleted = app.registry.collect_garbage(app.settings.keep_last_versions)
    except Unavailable as exc:
        log.warning("retention skipped", extra={"error": str(exc)})
        return
    if deleted:
        log.info("retention deleted versions", extra={"deleted": deleted})
