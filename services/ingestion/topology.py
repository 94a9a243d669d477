"""What ingestion needs of its topics, checked and repaired with the admin client (adapter).

- Size: the raw, training and dead-letter topics must accept records of the one limit
  (`limits`); a topic that accepts less is a start-up `ConfigError`.
- Partitions: outputs keep the raw partition (per-key order, and the recovery reads back
  the raw partition's outputs), so they need as many partitions as the raw topic. When the
  raw topic has more (it grew, at start-up or while running), ingestion adds the missing
  partitions to the outputs, as a producer adds partitions to a topic it owns. When that
  is refused (no ACL, broker down), the records of those raw partitions are held, never
  routed elsewhere: the worker retries with backoff, logs the error and sets
  `streamlearn_ingestion_unroutable_partition{partition}` to 1 until it succeeds.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import KafkaError, KafkaException

# The documented import path; the package's stubs only declare these on cimpl.
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewPartitions,
)

from services.ingestion.limits import check_topic_limits
from shared.errors import ConfigError, Unavailable

log = logging.getLogger(__name__)
TIMEOUT_S = 15.0


def check_limits(admin: AdminClient, topics: tuple[str, ...], limit: int) -> None:
    """Each topic's `max.message.bytes` (as the broker resolves it) must be at least `limit`.

    Raises:
        ConfigError: naming the topics that accept smaller records.

    """
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in topics]
    futures = admin.describe_configs(resources, request_timeout=TIMEOUT_S)
    accepted = {
        resource.name: int(future.result(timeout=TIMEOUT_S)["max.message.bytes"].value)
        for resource, future in futures.items()
    }
    check_topic_limits(accepted, limit)


def match_partitions(admin: AdminClient, raw: str, outputs: tuple[str, ...]) -> list[str]:
    """Give every output at least as many partitions as `raw`; returns the topics grown.

    Raises:
        ConfigError: an output topic is missing.
        KafkaException: the broker refused or did not answer (the caller retries).

    """
    counts = _partition_counts(admin, (raw, *outputs))
    short = [name for name in outputs if counts[name] < counts[raw]]
    if not short:
        return []
    log.warning(
        "the raw topic has more partitions than its outputs: adding theirs",
        extra={"raw": raw, "partitions": counts},
    )
    futures = admin.create_partitions(
        [NewPartitions(name, counts[raw]) for name in short], request_timeout=TIMEOUT_S
    )
    for future in futures.values():
        try:
            future.result(timeout=TIMEOUT_S * 2)
        except KafkaException as exc:  # another worker grew it first: fine
            if exc.args[0].code() != KafkaError.INVALID_PARTITIONS:
                raise
    _wait_for(admin, short, counts[raw])
    return short


def _partition_counts(admin: AdminClient, names: tuple[str, ...]) -> dict[str, int]:
    metadata = admin.list_topics(timeout=TIMEOUT_S).topics
    missing = [name for name in names if name not in metadata]
    if missing:
        raise ConfigError(f"topics {missing} do not exist")
    return {name: len(metadata[name].partitions) for name in names}


def _wait_for(admin: AdminClient, names: list[str], partitions: int) -> None:
    deadline = time.monotonic() + TIMEOUT_S * 2
    while min(_partition_counts(admin, tuple(names)).values()) < partitions:
        if time.monotonic() > deadline:
            raise Unavailable(f"topics {names} did not reach {partitions} partitions")
        time.sleep(0.1)
