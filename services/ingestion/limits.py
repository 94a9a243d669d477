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

from shared.errors import ConfigError
from shared.samples import Headers

# Record batch header (61 bytes) and the varints of one record (length, attributes,
# timestamp and offset deltas, key and value lengths, header count), each at its maximum.
RECORD_OVERHEAD = 61 + 5 + 1 + 10 + 5 + 5 + 5 + 5
HEADER_OVERHEAD = 10  # the two length varints of one header
MIN_LIMIT = 16 * 1024  # room for ingestion's own headers next to a truncated value


def record_size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """An upper bound of the bytes one record takes in a batch of its own."""
    return (
        RECORD_OVERHEAD
        + len(key or b"")
        + len(value or b"")
        + sum(HEADER_OVERHEAD + len(name.encode()) + len(data) for name, data in headers)
    )


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
