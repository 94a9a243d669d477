"""Wiring of the trainer: learner, consumer, registry publisher, metrics producer."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import torch
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from grpc_health.v1 import health_pb2
from prometheus_client import Info, start_http_server

from services.trainer.decode import PinnedStream
from services.trainer.device import choose, torch_threads
from services.trainer.distill import OnnxTabularTeacher, registered_teacher
from services.trainer.learner import Learner
from services.trainer.learning import Learning
from services.trainer.loop import TrainerLoop
from services.trainer.names import HEALTH_NAME as HEALTH_NAME
from services.trainer.progress import Every
from services.trainer.settings import TrainerSettings, reconcile
from services.trainer.single import group_members, refuse_if_shared
from services.trainer.text.distill import OnnxTeacher
from services.trainer.text.loop import TextTrainerLoop
from services.trainer.text.stream import TextStreamLearner, text_device
from services.trainer.versions import VersionPublisher
from shared.clients.registry import RegistryClient
from shared.grpc.server import build_server, mark_draining
from shared.kafka.admin import ensure_topics, standard_topics
from shared.kafka.config import admin_config, consumer_config, producer_config
from shared.lifecycle import STREAM_YOUNG_THRESHOLD, settle_heap
from shared.streams import Definition, load_definitions

log = logging.getLogger(__name__)

DEVICE = Info("streamlearn_trainer_device", "Where the trainer learns, on which path, and why")


def build(settings: TrainerSettings, registry: RegistryClient | None = None) -> TrainerLoop:
    """A trainer loop restored from its checkpoint, if any.

    The stream's definition is pinned first (`PinnedStream`): a schema decides the model's
    inputs (`reconcile`), so it comes before the learner.

    Raises:
        ConfigError: TRAINER_DEVICE=cuda without a GPU (before anything else is touched);
            a config that contradicts the stream's feature schema.
        Conflict: Another trainer of the model is live in its consumer group.

    """
    choose(settings.config, settings.device, torch.cuda.is_available())
    topics = settings.topics
    admin = AdminClient(admin_config(settings.kafka))
    wanted = (topics.train, topics.metrics, topics.streams)
    ensure_topics(admin, [t for t in standard_topics(topics) if t.name in wanted])
    stream = settings.stream

    def lookup() -> Definition | None:
        return {d.name: d for d in load_definitions(settings.kafka, topics.streams)}.get(stream)

    # Read when needed, not followed live: a change is only logged until a restart anyway
    # (PinnedStream), and a follower's thread polling the broker every 50 ms made two
    # trainers starting at once both lose the first-assignment check (single.py) about
    # half the time in test_trainer_single, against never without it.
    definition = lookup()
    if definition is not None and definition.text.max_bytes > 0:
        return _build_text(settings, registry, admin, definition, lookup)
    config = reconcile(settings.config, definition)
    pinned = PinnedStream(stream, config, definition, lookup)
    features, outputs = config.model.features, config.outputs
    teacher, tags = registered_teacher(
        config.distill,
        registry,
        lambda data, name: OnnxTabularTeacher(data, name, features, outputs),
    )
    learner = Learner(config, settings.device, teacher=teacher)
    alone = _single(admin, settings)
    alone()  # before subscribing; again at the first assignment (two starting at once)
    publisher = None
    if registry is not None:
        registry.create_model(settings.model_name, exist_ok=True)
        publisher = VersionPublisher(
            registry, settings.model_name, stream, settings.trainer_id, learner, pinned, tags
        )
    return _loop(TrainerLoop, learner, settings, publisher, alone, pinned)


def _build_text(
    settings: TrainerSettings,
    registry: RegistryClient | None,
    admin: AdminClient,
    definition: Definition,
    lookup: Callable[[], Definition | None],
) -> TrainerLoop:
    """The loop of a text stream: the language model of `settings.text` learns its texts."""
    placement = text_device(settings.device, torch.cuda.is_available())
    teacher, tags = registered_teacher(settings.text.distill, registry, OnnxTeacher)
    learner = TextStreamLearner(settings.text, placement, teacher)
    # No feature schema to featurize with: pinned for lineage (the stream's definition).
    pinned = PinnedStream(settings.stream, settings.config, definition, lookup)
    alone = _single(admin, settings)
    alone()
    publisher = None
    if registry is not None:
        registry.create_model(settings.model_name, exist_ok=True)
        publisher = VersionPublisher(
            registry,
            settings.model_name,
            settings.stream,
            settings.trainer_id,
            learner,
            pinned,
            tags,
        )
    return _loop(TextTrainerLoop, learner, settings, publisher, alone, pinned)


def _single(admin: AdminClient, settings: TrainerSettings) -> Callable[[], None]:
    """The check that no other trainer of the model is live in its group (`single.py`)."""
    group = settings.consumer_group

    def alone() -> None:
        members = group_members(admin, group)
        refuse_if_shared(members, group, settings.model_name, settings.trainer_id)

    return alone


def _loop(
    kind: type[TrainerLoop],
    learner: Learning,
    settings: TrainerSettings,
    publisher: VersionPublisher | None,
    alone: Callable[[], None],
    pinned: PinnedStream,
) -> TrainerLoop:
    """A loop of `kind` with the consumer, producer and schedules of `settings`."""
    topics = settings.topics
    # Static membership: a restarted trainer (same id) takes its partitions back at once
    # instead of waiting out the dead member's session, and is told from a second instance.
    consumer = Consumer(
        consumer_config(
            settings.kafka,
            settings.consumer_group,
            enable_auto_commit=False,
            group_instance_id=settings.trainer_id,
            client_id=f"streamlearn-trainer-{settings.trainer_id}",
            session_timeout_ms=10_000,
            max_partition_fetch_bytes=settings.fetch_partition_bytes,
        )
    )
    return kind(
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
        alone=alone,
        pinned=pinned,
    )


def run(settings: TrainerSettings, stop: threading.Event) -> None:
    """Train until `stop` (SIGTERM); the last checkpoint is written before exit."""
    threads = torch_threads(settings.torch_threads)
    torch.set_num_threads(threads)
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
    server, health, _ = build_server(
        f"[::]:{settings.grpc_port}", [], max_workers=2, security=settings.security
    )
    server.start()
    try:
        with RegistryClient(
            settings.registry_address, security=settings.registry_client()
        ) as registry:
            loop = build(settings, registry)
            # Ready once restored from the checkpoint with the registry and topics in place.
            health.set(HEALTH_NAME, health_pb2.HealthCheckResponse.SERVING)
            placement = loop.learner.placement
            DEVICE.info(
                {
                    "device": placement.device,
                    "path": placement.path,
                    "reason": placement.reason,
                    "torch_threads": str(threads),
                }
            )
            log.info(
                "trainer running",
                extra={
                    "device": placement.device,
                    "path": placement.path,
                    "reason": placement.reason,
                    "torch_threads": threads,
                    "consumer_group": settings.consumer_group,
                    "events": loop.learner.applied,
                },
            )
            settle_heap(STREAM_YOUNG_THRESHOLD)
            loop.run(stop)
    finally:
        mark_draining(health)
        server.stop(1).wait()
