"""Wiring of the inference service: repository, engine, follower, gRPC server, metrics."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient
from grpc import Server
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import HealthServicer
from prometheus_client import start_http_server

from inference import _pool, grpc_service_pb2_grpc
from services.inference import stats
from services.inference.engine import Engine
from services.inference.follower import EventWatcher, VersionFollower
from services.inference.names import SERVICE as SERVICE
from services.inference.repository import Repository
from services.inference.servicer import InferenceServicer
from services.inference.settings import InferenceSettings
from shared.clients.registry import RegistryClient
from shared.grpc.server import ServiceBinding, build_server, mark_draining, mark_serving
from shared.kafka.admin import ensure_topics, standard_topics
from shared.kafka.config import consumer_config

log = logging.getLogger(__name__)

FOLLOWER_CHECK_S = 1.0


@dataclass
class InferenceApp:
    """A built, not yet running, inference service."""

    settings: InferenceSettings
    engine: Engine
    watcher: EventWatcher
    registry: RegistryClient
    server: Server
    health: HealthServicer
    port: int


def build(settings: InferenceSettings) -> InferenceApp:
    """Build everything; nothing is loaded or served until `run`."""
    repository = Repository(settings.model_names, settings.keep_loaded)
    engine = Engine(repository, settings.max_batch_size, settings.max_queue_delay_us / 1e6)
    registry = RegistryClient(settings.registry_address)
    followers = [
        VersionFollower(
            m,
            registry,
            settings.alias,
            settings.pinned_version,
            settings.device,
            settings.intra_op_threads,
        )
        for m in repository.all()
    ]
    ensure_topics(
        AdminClient(settings.kafka.client_config()),
        [t for t in standard_topics(settings.topics) if t.name == settings.topics.model_events],
    )
    # A group of its own per replica: every replica sees every event; offsets are not used.
    consumer = Consumer(consumer_config(settings.kafka, f"inference-{uuid.uuid4().hex[:12]}"))
    watcher = EventWatcher(followers, consumer, settings.topics.model_events, settings.resync_s)
    servicer = InferenceServicer(engine, settings.max_request_bytes)
    binding = ServiceBinding(
        grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server,
        servicer,
        SERVICE,
        _pool.POOL,
    )
    server, health, port = build_server(
        f"0.0.0.0:{settings.grpc_port}",
        [binding],
        max_workers=settings.grpc_workers,
        max_message_bytes=settings.max_request_bytes + 1024 * 1024,
    )
    watcher.on_failure = health_reporter(health)
    return InferenceApp(settings, engine, watcher, registry, server, health, port)


def health_reporter(health: HealthServicer) -> Callable[[BaseException], None]:
    """What a dying follower calls: the service is NOT_SERVING, its versions would go stale."""

    def report(_exc: BaseException) -> None:
        health.set(SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)

    return report


def keep_following(watcher: EventWatcher, health: HealthServicer, repository: Repository) -> bool:
    """Restart a dead follower and catch up on what it missed; True if it was restarted.

    Health stays NOT_SERVING from the follower's death until it follows again.
    """
    if watcher.alive():
        return False
    health.set(SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
    stats.FOLLOWER_RESTARTS.inc()
    log.error("restarting the model-events follower")
    watcher.restart()
    watcher.reconcile_all()  # events it missed while dead
    if watcher.alive() and repository.ready():
        mark_serving(health, [SERVICE])
    return True


def run(app: InferenceApp, stop: threading.Event) -> None:
    """Load the target versions, serve until `stop`, then drain in-flight requests."""
    if app.settings.metrics_port:
        start_http_server(app.settings.metrics_port)
    app.server.start()
    app.watcher.start()
    log.info("inference listening", extra={"port": app.port})
    try:
        while not stop.is_set() and not app.engine.repository.ready():
            app.watcher.reconcile_all()
            stop.wait(1.0)
        mark_serving(app.health, [SERVICE])
        log.info("inference serving")
        while not stop.wait(FOLLOWER_CHECK_S):
            keep_following(app.watcher, app.health, app.engine.repository)
    finally:
        mark_draining(app.health)
        app.server.stop(app.settings.drain_grace_s).wait()  # in-flight requests finish
        app.watcher.stop()
        app.engine.close()
        app.registry.close()
        log.info("inference stopped")
