"""What ingestion needs of its topics, checked and repaired with the admin client (adapter).

- Size: the raw, training and dead-letter topics must accept records of the one limit
  (`limits`); a topic that accepts less is a start-up `ConfigError`.
- Partitions: outputs keep the raw partition (per-key order, and the recovery reads back
  the raw partition's outputs), so every raw partition needs its partition in the outputs.
  When the raw topic has more (it grew), a raw partition the outputs lack is held by the
  worker (`holding`: paused, its records kept, never routed elsewhere nor committed) with an
  error log and `streamlearn_ingestion_unroutable_partition{partition}` at 1, until an
  operator adds the outputs' partitions. Only with `INGESTION_GROW_OUTPUTS=true` does
  ingestion add them itself (`require_partition`).

Growing the raw topic changes which partition a key goes to, and both guarantees that are
per raw partition break across that boundary: the de-duplication memory is per partition,
so a producer's retry of an event sent before the growth (partition p) and after it
(partition q) is accepted twice; and the records of one key sent before and after are in
two partitions, so their order is no longer kept. Grow the raw topic only with producers
stopped and drained, or accept both for the events in flight at that moment.
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


def require_partition(
    admin: AdminClient, raw: str, outputs: tuple[str, ...], partition: int, grow: bool
) -> None:
    """The outputs must have raw `partition`; with `grow`, the missing partitions are added.

    Raises:
        ConfigError: an output lacks the partition (and `grow` is off), or is missing.
        KafkaException: the broker refused or did not answer (the caller retries).

    """
    counts = _partition_counts(admin, (raw, *outputs))
    short = {name: counts[name] for name in outputs if counts[name] <= partition}
    if not short:
        return
    if not grow:
        raise ConfigError(
            f"raw partition {partition} of {raw} has no partition in {short} (their partition "
            f"counts): its records are held. Add partitions to them (as many as {raw} has: "
            f"{counts[raw]}), or set INGESTION_GROW_OUTPUTS=true to let ingestion add them"
        )
    match_partitions(admin, raw, outputs)


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
