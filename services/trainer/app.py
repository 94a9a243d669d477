"""Wiring of the trainer: learner, consumer, registry publisher, metrics producer."""

from __future__ import annotations

import logging
import threading

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from grpc_health.v1 import health_pb2
from prometheus_client import start_http_server

from services.trainer.learner import Learner
from services.trainer.loop import TrainerLoop
from services.trainer.names import HEALTH_NAME as HEALTH_NAME
from services.trainer.progress import Every
from services.trainer.settings import TrainerSettings
from services.trainer.versions import VersionPublisher
from shared.clients.registry import RegistryClient
from shared.grpc.server import build_server, mark_draining
from shared.kafka.admin import ensure_topics, standard_topics
from shared.kafka.config import consumer_config, producer_config

log = logging.getLogger(__name__)


def build(settings: TrainerSettings, registry: RegistryClient | None = None) -> TrainerLoop:
    """A trainer loop restored from its checkpoint, if any."""
    topics = settings.topics
    ensure_topics(
        AdminClient(settings.kafka.client_config()),
        [t for t in standard_topics(topics) if t.name in (topics.train, topics.metrics)],
    )
    learner = Learner(settings.config, settings.device)
    publisher = None
    if registry is not None:
        registry.create_model(settings.model_name, exist_ok=True)
        publisher = VersionPublisher(
            registry, settings.model_name, settings.stream, settings.trainer_id, learner
        )
    # Static membership: a restarted trainer (same id) takes its partitions back at once
    # instead of waiting out the dead member's session.
    consumer = Consumer(
        consumer_config(
            settings.kafka,
            settings.consumer_group,
            enable_auto_commit=False,
            group_instance_id=settings.trainer_id,
            session_timeout_ms=10_000,
            max_partition_fetch_bytes=settings.fetch_partition_bytes,
        )
    )
    return TrainerLoop(
        learner,
        consumer,
        topics.train,
        settings.checkpoint_path,
        publisher,
        Producer(producer_config(settings.kafka)),
        topics.metrics,
        checkpoint_every=Every(settings.checkpoint_every_events, settings.checkpoint_every_s),
        version_every=Every(settings.version_every_events, settings.version_every_s),
        fetch=settings.fetch_max,
        streams={settings.stream},
    )


def run(settings: TrainerSettings, stop: threading.Event) -> None:
    """Train until `stop` (SIGTERM); the last checkpoint is written before exit."""
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
    server, health, _ = build_server(f"[::]:{settings.grpc_port}", [], max_workers=2)
    server.start()
    try:
        with RegistryClient(settings.registry_address) as registry:
            loop = build(settings, registry)
            # Ready once restored from the checkpoint with the registry and topics in place.
            health.set(HEALTH_NAME, health_pb2.HealthCheckResponse.SERVING)
            log.info(
                "trainer running",
                extra={"device": str(loop.learner.device), "events": loop.learner.applied},
            )
            loop.run(stop)
    finally:
        mark_draining(health)
        server.stop(1).wait()
