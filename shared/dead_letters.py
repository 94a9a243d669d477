"""Records that always fit: the size of a Kafka record and dead letters cut to a limit.

Transport-free; used by every service that writes dead letters (ingestion, the joiner), so a
record the producer would refuse as too large never stops a partition: a dead letter is cut
in steps until it fits (`fit`), and a service refuses a limit too small for that to work.
"""

from __future__ import annotations

from collections.abc import Sequence

from shared import samples
from shared.samples import Headers

# Record batch header (61 bytes) and the varints of one record (length, attributes,
# timestamp and offset deltas, key and value lengths, header count), each at its maximum.
RECORD_OVERHEAD = 61 + 5 + 1 + 10 + 5 + 5 + 5 + 5
HEADER_OVERHEAD = 10  # the two length varints of one header
HEADER_MAX = 1024  # of a header (or key) kept in a dead letter cut to fit
# What the last step of `fit` keeps can never exceed this (bounded key, source with a topic
# name of at most 249 characters, reason, detail and the original length, with overheads).
MIN_FIT_BYTES = 4096
_OURS = "streamlearn-"
_CUT = b" (value truncated to fit the limit)"
_ESSENTIAL = (samples.SOURCE, samples.REASON, samples.DETAIL)

Record = tuple[bytes | None, bytes, Headers]  # key, value, headers


def record_size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """An upper bound of the bytes one record takes in a batch of its own."""
    return RECORD_OVERHEAD + len(key or b"") + len(value or b"") + headers_size(headers)


def headers_size(headers: Sequence[tuple[str, bytes | None]]) -> int:
    """The bytes `headers` take in a record (a value None: none)."""
    return sum(HEADER_OVERHEAD + len(name.encode()) + len(data or b"") for name, data in headers)


def bounded(data: bytes, most: int = HEADER_MAX) -> bytes:
    """`data`, cut to `most` bytes with a trailing `...` when longer."""
    return data if len(data) <= most else data[: most - 3] + b"..."


def fit(key: bytes | None, value: bytes, headers: Headers, limit: int) -> Record:
    """A dead letter cut to `limit` bytes, in steps until it fits.

    1. the value is cut (header `streamlearn-truncated` holds its original length);
    2. the sender's headers go, keeping ours (`streamlearn-*`, bounded) and one content
       type (bounded; any further `content-type` header is the sender's);
    3. only the source, reason, detail (all bounded) and original length stay, with the key
       bounded: this always fits a limit of at least `MIN_FIT_BYTES`.

    Raises:
        AssertionError: `limit` is below `MIN_FIT_BYTES` and nothing fits.

    """
    if record_size(key, value, headers) <= limit:
        return key, value, headers
    ours: Headers = []
    theirs: Headers = []
    content_type_kept = False
    for name, data in headers:
        if name.startswith(_OURS):
            if name == samples.DETAIL:
                data = bounded(data, HEADER_MAX - len(_CUT)) + _CUT
            ours.append((name, bounded(data)))
        elif name == samples.CONTENT_TYPE and not content_type_kept:
            ours.append((name, bounded(data)))
            content_type_kept = True
        else:
            theirs.append((name, data))
    marker = (samples.TRUNCATED, str(len(value)).encode())
    for kept in ([*theirs, *ours, marker], [*ours, marker]):
        room = limit - record_size(key, b"", kept)
        if room >= 0:
            return key, value[:room], kept
    kept = [*((k, v) for k, v in ours if k in _ESSENTIAL), marker]
    key = key[:HEADER_MAX] if key else key
    room = limit - record_size(key, b"", kept)
    if room < 0:  # impossible for limit >= MIN_FIT_BYTES (checked by the services)
        raise AssertionError(f"a dead letter cannot be cut to {limit} bytes")
    return key, value[:room], kept
