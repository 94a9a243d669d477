"""Wiring of the joiner: topics, stream catalog, worker, health and metrics."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from confluent_kafka.admin import AdminClient
from grpc import Server
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import HealthServicer
from prometheus_client import REGISTRY, start_http_server

from services.joiner.exposition import JoinCollector
from services.joiner.names import HEALTH_NAME
from services.joiner.settings import JoinerSettings
from services.joiner.worker import Worker
from shared.errors import ConfigError
from shared.grpc.server import build_server, mark_draining
from shared.kafka.admin import TopicSpec, ensure_topics
from shared.kafka.config import admin_config
from shared.streams import StreamCatalog

log = logging.getLogger(__name__)


@dataclass
class JoinerApp:
    """A built, not yet running, joiner."""

    settings: JoinerSettings
    catalog: StreamCatalog
    worker: Worker
    server: Server
    health: HealthServicer


def topic_specs(settings: JoinerSettings) -> list[TopicSpec]:
    """The topics the joiner reads and writes, as created when missing."""
    topics = settings.topics
    common = {"retention.ms": str(topics.retention_ms)}
    compacted = {"cleanup.policy": "compact"}
    n, rf = topics.partitions, topics.replication_factor
    return [
        TopicSpec(topics.predictions, n, rf, common),
        TopicSpec(topics.feedback, n, rf, common),
        TopicSpec(topics.train, n, rf, common),
        TopicSpec(topics.dlq, n, rf, common),
        TopicSpec(topics.streams, 1, rf, compacted),
        # The state changelog: partition p holds the state of input partition p.
        TopicSpec(topics.joiner_state, n, rf, compacted),
    ]


def check_partitions(admin: AdminClient, settings: JoinerSettings) -> None:
    """The inputs must be co-partitioned and the changelog must have their partitions.

    Raises:
        ConfigError: They are not (the joins of a partition would be split or unsaved).

    """
    topics = settings.topics
    names = (topics.predictions, topics.feedback, topics.joiner_state)
    listed = admin.list_topics(timeout=30).topics
    counts = {name: len(listed[name].partitions) for name in names}
    if counts[topics.predictions] != counts[topics.feedback]:
        raise ConfigError(f"predictions and feedback are not co-partitioned: {counts}")
    if counts[topics.joiner_state] < counts[topics.predictions]:
        raise ConfigError(f"the joiner state topic has fewer partitions than its inputs: {counts}")


def build(settings: JoinerSettings, stop: threading.Event) -> JoinerApp:
    """Create missing topics, follow the stream definitions and build the worker and server.

    Raises:
        ConfigError: The topics are not partitioned alike (see `check_partitions`).

    """
    admin = AdminClient(admin_config(settings.kafka))
    ensure_topics(admin, topic_specs(settings))
    check_partitions(admin, settings)
    catalog = StreamCatalog(settings.kafka, settings.topics.streams).start()
    worker = Worker(settings, catalog, stop)
    server, health, _ = build_server(
        f"[::]:{settings.grpc_port}", [], max_workers=2, security=settings.security
    )
    return JoinerApp(settings, catalog, worker, server, health)


def run(app: JoinerApp, stop: threading.Event) -> None:
    """Join until SIGTERM/SIGINT, then commit the open transaction and close.

    Raises:
        JoinerFailed: A transaction failed; the process exits with status 1 and its
            successor restores the committed state.

    """
    settings = app.settings
    if settings.metrics_port:
        REGISTRY.register(JoinCollector(app.worker.metrics))
        start_http_server(settings.metrics_port)
    app.server.start()
    try:
        app.worker.start()
        app.health.set(HEALTH_NAME, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "joiner running",
            extra={
                "predictions": settings.topics.predictions,
                "feedback": settings.topics.feedback,
                "transactional_id": settings.transactional_id,
            },
        )
        app.worker.run()
    finally:
        mark_draining(app.health)
        app.server.stop(1).wait()
        app.catalog.close()
        log.info("joiner stopped")
