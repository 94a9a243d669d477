"""The one size limit of ingestion: how large a record it may write (transport-free).

`INGESTION_MAX_MESSAGE_BYTES` bounds every record ingestion writes, measured by
`record_size` the way the producer measures it (key, value and headers, plus the record
batch overhead; never less than aiokafka's estimate). Everything else is derived from it:
- the router refuses an input whose output would be larger (`oversized`), and cuts the value
  of a dead letter that would be larger (header `streamlearn-truncated`), so no output can
  ever be refused by the producer;
- the worker's producer (`max_request_size`) and the gRPC front door's producer
  (`message.max.bytes`) are configured with it;
- at start-up the raw, training and dead-letter topics must accept it (`max.message.bytes`),
  or the service refuses to start with a `ConfigError` naming them: lowering the limit
  silently would turn valid samples into dead letters without anybody noticing.
"""

from __future__ import annotations

from collections.abc import Mapping

from shared.dead_letters import HEADER_OVERHEAD, RECORD_OVERHEAD, headers_size, record_size
from shared.errors import ConfigError

# Re-exported: the size of a record is measured once, in shared (ingestion and the joiner).
__all__ = [
    "HEADER_OVERHEAD",
    "MIN_LIMIT",
    "RECORD_OVERHEAD",
    "check_topic_limits",
    "headers_size",
    "record_size",
]

MIN_LIMIT = 16 * 1024  # room for ingestion's own headers next to a truncated value


def check_topic_limits(accepted: Mapping[str, int], limit: int) -> None:
    """Every topic must accept records of `limit` bytes (its `max.message.bytes`).

    Raises:
        ConfigError: naming the topics that accept less.

    """
    short = {name: size for name, size in accepted.items() if size < limit}
    if short:
        raise ConfigError(
            f"topics accept smaller records (max.message.bytes {short}) than "
            f"INGESTION_MAX_MESSAGE_BYTES={limit}: raise their max.message.bytes or lower it"
        )
