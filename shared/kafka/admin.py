"""Topic administration: create what a service needs if missing, and wait for the broker."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException

# The documented import path; the package's stubs only declare NewTopic on cimpl.
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from shared.errors import Unavailable
from shared.settings import KafkaSettings, TopicSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    """A topic to create when missing."""

    name: str
    partitions: int = 1
    replication_factor: int = 1
    config: dict[str, str] = field(default_factory=dict)


def standard_topics(topics: TopicSettings) -> list[TopicSpec]:
    """The topics of a streamlearn deployment, shaped by settings."""
    common = {"retention.ms": str(topics.retention_ms)}
    compacted = {"cleanup.policy": "compact"}

    def spec(name: str, partitions: int, config: dict[str, str]) -> TopicSpec:
        return TopicSpec(name, partitions, topics.replication_factor, config)

    return [
        spec(topics.raw, topics.partitions, common),
        spec(topics.train, topics.partitions, common),
        spec(topics.dlq, topics.partitions, common),
        spec(topics.metrics, 1, common),
        # One partition: model events are totally ordered by registry sequence.
        spec(topics.model_events, 1, common),
        spec(topics.streams, 1, compacted),
        # Learning from production traffic: predictions and feedback are both keyed by event
        # id and have the same partition count, so they are co-partitioned (a prediction and
        # its feedback land in the same partition number) and the joiner's changelog, keyed
        # alike, holds each partition's state in the partition of the same number.
        spec(topics.predictions, topics.partitions, common),
        spec(topics.feedback, topics.partitions, common),
        spec(topics.joiner_state, topics.partitions, compacted),
    ]


def ensure_topics(admin: AdminClient, specs: list[TopicSpec], timeout: float = 30.0) -> list[str]:
    """Create the topics of `specs` that do not exist yet; existing ones are left as they are.

    Returns:
        The names of the topics this call created.

    """
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [s for s in specs if s.name not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(s.name, s.partitions, s.replication_factor, config=s.config) for s in missing],
        request_timeout=timeout,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # lost a benign race
                raise
    _wait_for_leaders(admin, created, timeout)
    log.info("created topics", extra={"topics": created})
    return created


def _wait_for_leaders(admin: AdminClient, names: list[str], timeout: float) -> None:
    """Creation returns before partitions have leaders; clients fail until they do."""
    deadline = time.monotonic() + timeout
    while True:
        topics = admin.list_topics(timeout=timeout).topics
        pending = [
            name
            for name in names
            if name not in topics
            or topics[name].error is not None
            or any(p.leader < 0 for p in topics[name].partitions.values())
        ]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise Unavailable(f"topics without partition leaders after {timeout:.0f}s: {pending}")
        time.sleep(0.05)


def probe_admin(bootstrap: str, kafka: KafkaSettings | None = None) -> AdminClient:
    """An AdminClient for readiness probes: silent about the refused connections it expects.

    Args:
        bootstrap: The address to probe.
        kafka: The credentials and TLS settings to connect with (a secure broker refuses
            plain-text probes); None: plain text.

    """
    if kafka is None:
        return AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    config = {key: value for key, value in kafka.client_config().items() if key != "logger"}
    return AdminClient(config | {"bootstrap.servers": bootstrap, "log_level": 0})


def wait_for_broker(admin: AdminClient, timeout: float) -> None:
    """Block until the cluster answers a metadata request with at least one broker.

    Raises:
        Unavailable: The cluster did not answer within `timeout` seconds.

    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if admin.list_topics(timeout=min(2.0, max(0.1, deadline - time.monotonic()))).brokers:
                return
        except KafkaException as exc:
            last_error = exc
        time.sleep(0.1)
    raise Unavailable(f"Kafka did not answer within {timeout:.0f}s: {last_error or 'no brokers'}")
