"""librdkafka configurations with streamlearn's delivery guarantees built in."""

from __future__ import annotations

from typing import Any

from shared.kafka.outage import SERVICE_STATISTICS_MS, ConnectionLog
from shared.settings import KafkaSettings

FETCH_QUEUE_BACKOFF_MS = 10


def producer_config(
    kafka: KafkaSettings, *, transactional_id: str | None = None, **overrides: Any
) -> dict[str, Any]:
    """An idempotent producer: acks=all, no reordering or duplicates on retry.

    Keyed records are partitioned as Java's client (and aiokafka, faust's) partitions them
    (murmur2): the prediction log and feedback are co-partitioned by event id whoever
    writes them, so feedback any Kafka client sends with the default partitioner reaches
    the joiner that holds its prediction.

    Args:
        kafka: Connection settings.
        transactional_id: Set for exactly-once consume-transform-produce; must be stable
            across restarts of the same logical producer so the broker fences zombies.
        **overrides: librdkafka properties, dots written as underscores (linger_ms=5).

    """
    config = kafka.client_config() | {
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "partitioner": "murmur2_random",
    }
    if transactional_id:
        config["transactional.id"] = transactional_id
    return config | dotted(overrides)


def consumer_config(kafka: KafkaSettings, group_id: str, **overrides: Any) -> dict[str, Any]:
    """A consumer whose offsets move only when the application says it processed a record.

    Offsets are stored by the application after processing (`store_processed`), never
    automatically; auto-commit then commits only those stored offsets, every second and on
    close. Reads only committed transactional data.

    Once its local queue holds `queued.min.messages`, librdkafka postpones a partition's next
    fetch by `fetch.queue.backoff.ms` (default 1 s): a consumer that drains its queue faster
    than that waits out the rest of the second. Measured on the 2-core box reading 1M small
    records: 210-330k records/s with the default, 1.8-3.0M/s with 10 ms.
    """
    config = kafka.client_config() | {
        "group.id": group_id,
        "enable.auto.offset.store": False,
        "enable.auto.commit": True,
        "auto.commit.interval.ms": 1000,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "enable.partition.eof": False,
        "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS,
    }
    # A consumer polls all the time: statistics are cheap and tell when brokers are back.
    if isinstance(logger := config.get("logger"), ConnectionLog):
        config |= logger.client_config(SERVICE_STATISTICS_MS)
    return config | dotted(overrides)


def admin_config(kafka: KafkaSettings) -> dict[str, Any]:
    """Properties for an AdminClient."""
    return kafka.client_config()


def dotted(overrides: dict[str, Any]) -> dict[str, Any]:
    """Python-friendly keyword names (linger_ms) as librdkafka properties (linger.ms).

    confluent-kafka's callbacks keep their names (error_cb, stats_cb, logger, ...).
    """
    return {
        key if key in _PYTHON_PROPERTIES else key.replace("_", "."): value
        for key, value in overrides.items()
    }


_PYTHON_PROPERTIES = frozenset(
    {"error_cb", "stats_cb", "throttle_cb", "oauth_cb", "on_delivery", "on_commit", "logger"}
)
