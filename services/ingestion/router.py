"""Routing of one raw record: valid samples to training, everything else to the dead letters.

Transport-free: a `RawRecord` in, `Output`s out. A record holding one `Sample` gives one
output. A `SampleBatch` gives one training record with its valid rows (the original bytes
when all are valid) and one dead letter per rejected row, itself a one-row batch, so the
high-rate path stays columnar end to end. A batch broken as a whole (undecodable, wrong
shape) is one dead letter with the original bytes.

Routing never raises on input: whatever a record holds, it gives documented `Reason`s.
- No `content-type` header means a `Sample`; ours mark a `Sample` or a `SampleBatch`; any
  other (or two that disagree) is `unsupported_schema`.
- No output is larger than the limit (`limits.record_size`): an input that is larger itself
  (key, value and headers: the raw topic may accept more) or whose training output would be
  is `oversized`, and a dead letter that would be is cut to fit (`_fit`: its value keeps its
  start, header `streamlearn-truncated` holds the original length; then the sender's headers
  go, any `content-type` after the first counting as the sender's; at last only the source,
  reason and detail stay), so no record can make the producer refuse an output.
- An exception while routing one record (a bug) makes that record alone an `internal_error`
  dead letter with the exception's text (naming the rows of it an earlier run routed, not to
  be redriven), and leaves the memory as it was: routing only asks it questions while
  planning, and changes it once the plan is final.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
from google.protobuf.message import DecodeError

from services.ingestion.dedup import PartitionMemory
from services.ingestion.reasons import Reason, Rejection
from services.ingestion.validation import (
    TimeLimits,
    check_batch,
    check_envelope,
    check_rows,
    check_sample,
    invalid_utf8,
)
from shared import samples
from shared.dead_letters import MIN_FIT_BYTES, bounded, fit, record_size
from shared.errors import ConfigError, InvalidArgument
from streamlearn.v1 import sample_pb2, stream_pb2

log = logging.getLogger(__name__)
WHOLE = -1  # the "row" of an output that carries its input record whole
# (stream name, wall time the record was written) -> its definition at that time, or None
Lookup = Callable[[str, float], stream_pb2.StreamDefinition | None]


@dataclass(frozen=True)
class RawRecord:
    """A record of the raw topic, as the consumer delivered it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None  # None: a tombstone
    headers: samples.Headers
    written_at: float = 0.0  # the record's timestamp, seconds


@dataclass(frozen=True)
class Output:
    """A record to write; `rejection` is None for the training topic."""

    key: bytes | None
    value: bytes
    headers: samples.Headers
    rejection: Rejection | None
    stream: str
    rows: int = 1


@dataclass
class _Plan:
    """The outputs of one record and the event ids to remember once they are final."""

    outputs: list[Output]
    accepted: dict[str, None] = field(default_factory=dict)  # in order, first wins
    skipped: list[int] = field(default_factory=list)  # rows routed before (by an earlier run)


class Router:
    """Validates and de-duplicates raw records into training records and dead letters."""

    def __init__(
        self,
        lookup: Lookup,
        limits: TimeLimits,
        max_bytes: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Route with stream definitions from `lookup`, writing records of `max_bytes` at most.

        Raises:
            ConfigError: `max_bytes` is below `MIN_MAX_BYTES` (no dead letter could fit).

        """
        if max_bytes < MIN_MAX_BYTES:
            raise ConfigError(f"the size limit must be at least {MIN_MAX_BYTES} bytes")
        self._lookup = lookup
        self._limits = limits
        self._max_bytes = max_bytes
        self._clock = clock

    @property
    def lookup(self) -> Lookup:
        """Where stream definitions come from."""
        return self._lookup

    @property
    def limits(self) -> TimeLimits:
        """The bounds of event times."""
        return self._limits

    @property
    def max_bytes(self) -> int:
        """The largest record routing writes."""
        return self._max_bytes

    def now(self) -> float:
        """The routing clock (wall time, seconds)."""
        return self._clock()

    def route(self, record: RawRecord, memory: PartitionMemory) -> list[Output]:
        """The outputs of `record`; empty when an earlier run routed all of it already."""
        if memory.routed_before(record.offset, WHOLE):
            memory.done_with(record.offset, [WHOLE])
            return []
        now = self._clock()
        try:
            plan = self._within_limit(record, self._plan(record, memory, now))
        except Exception as exc:  # one bad record must not stop its partition
            log.exception("routing a record failed", extra={"source": _source(record).decode()})
            detail = f"{type(exc).__name__}: {exc}"
            if earlier := memory.rows_routed_before(record.offset):  # do not redrive those
                detail = f"rows {earlier} of this record were routed before; {detail}"
            plan = _Plan([_dead(record, Rejection(Reason.INTERNAL_ERROR, detail))])
        # Only now, the plan final, does the memory change.
        memory.done_with(record.offset, plan.skipped)
        memory.accept_all(plan.accepted, record.offset, now)
        return [_fit(output, self._max_bytes) for output in plan.outputs]

    def rejections(self, value: bytes, headers: samples.Headers) -> list[Rejection]:
        """What routing this record would reject, without any memory of earlier records.

        The gRPC front door uses it to refuse invalid samples before they reach Kafka.
        """
        record = RawRecord("request", 0, 0, None, value, headers, self._clock())
        outputs = self.route(record, PartitionMemory(window_s=60.0))
        return [o.rejection for o in outputs if o.rejection is not None]

    def _plan(self, record: RawRecord, memory: PartitionMemory, now: float) -> _Plan:
        """What to write for `record`, before the size limit; never changes `memory`."""
        if not record.value:
            what = "a tombstone (no value)" if record.value is None else "an empty value"
            return _Plan([_dead(record, Rejection(Reason.EMPTY, what))])
        size = record_size(record.key, record.value, record.headers)
        if size > self._max_bytes:  # cheap, before parsing anything; headers and key count
            detail = f"the record is {size} bytes, the limit is {self._max_bytes}"
            return _Plan([_dead(record, Rejection(Reason.OVERSIZED, detail))])
        content = _content_type(record.headers)
        if isinstance(content, Rejection):
            return _Plan([_dead(record, content)])
        if content == samples.BATCH_TYPE:
            return self._route_batch(record, memory, now)
        return self._route_sample(record, memory, now)

    def _within_limit(self, record: RawRecord, plan: _Plan) -> _Plan:
        """The whole input is `oversized` when a training output would exceed the limit."""
        for output in plan.outputs:
            size = record_size(output.key, output.value, output.headers)
            if output.rejection is None and size > self._max_bytes:
                detail = f"its training record is {size} bytes, the limit is {self._max_bytes}"
                return _Plan([_dead(record, Rejection(Reason.OVERSIZED, detail))])
        return plan

    def _route_sample(self, record: RawRecord, memory: PartitionMemory, now: float) -> _Plan:
        value = record.value or b""
        try:
            sample = sample_pb2.Sample.FromString(value)
        except DecodeError as exc:
            return _Plan([_dead(record, _undecodable("Sample", value, exc))])
        definition = self._lookup(sample.stream, record.written_at)
        rejection = check_envelope(sample.schema_version, sample.stream, definition)
        if rejection is None and definition is not None:
            rejection = check_sample(sample, definition, self._limits, int(now * 1000))
            rejection = rejection or _duplicate(memory, {}, sample.event_id)
        if rejection:
            return _Plan([_dead(record, rejection, sample.event_id, sample.stream)])
        headers = [
            (samples.CONTENT_TYPE, samples.SAMPLE_TYPE),
            (samples.SOURCE, _source(record)),
            (samples.EVENT_ID, sample.event_id.encode()),
        ]
        output = Output(record.key, value, headers, None, sample.stream)
        return _Plan([output], {sample.event_id: None})

    def _route_batch(self, record: RawRecord, memory: PartitionMemory, now: float) -> _Plan:
        try:
            batch = sample_pb2.SampleBatch.FromString(record.value or b"")
            columns = samples.decode_batch(batch)
        except (DecodeError, InvalidArgument) as exc:
            rejection = _undecodable("SampleBatch", record.value or b"", exc)
            return _Plan([_dead(record, rejection)])
        if not len(columns):
            return _Plan([_dead(record, Rejection(Reason.EMPTY, "the batch has no rows"))])
        definition = self._lookup(batch.stream, record.written_at)
        whole = check_envelope(batch.schema_version, batch.stream, definition)
        if whole is None and definition is not None:
            whole = check_batch(columns, definition)
        if whole is not None or definition is None:  # (check_envelope rejects unknown streams)
            whole = whole or Rejection(Reason.UNKNOWN_STREAM, "")
            return _Plan([_dead(record, whole, stream=batch.stream)])
        rejected = check_rows(columns, definition, self._limits, int(now * 1000))
        plan = _Plan([])
        good: list[int] = []
        known = memory.known([hash(e) for e in columns.event_ids])  # one lookup for all rows
        recovering = memory.any_routed_before
        for row, event_id in enumerate(columns.event_ids):
            if recovering and memory.routed_before(record.offset, row):  # forgotten once final
                plan.skipped.append(row)
                continue
            bad = rejected.get(row)
            if not bad and (known[row] or event_id in plan.accepted):
                bad = _duplicate(memory, plan.accepted, event_id)
            if bad:
                plan.outputs.append(_dead_row(record, columns, row, bad))
            else:
                plan.accepted[event_id] = None
                good.append(row)
        if good:
            plan.outputs.insert(0, _train_rows(record, columns, good))
        return plan


def _undecodable(name: str, value: bytes, exc: Exception) -> Rejection:
    """Why `value` is not a `name` (of sample.proto): which field is invalid UTF-8, if one is.

    Protobuf says only "Error parsing message"; a producer that sent, say, Latin-1 text
    needs to know which field to fix.
    """
    descriptor = sample_pb2.DESCRIPTOR.message_types_by_name[name]
    field = invalid_utf8(descriptor, value) if isinstance(exc, DecodeError) else None
    return Rejection(Reason.UNDECODABLE, f"not a {name}: {field or exc}")


def _content_type(headers: samples.Headers) -> bytes | Rejection:
    """Which of our types the record holds (no header: a `Sample`), or why it is none."""
    given = {v for k, v in headers if k == samples.CONTENT_TYPE}
    if not given:
        return samples.SAMPLE_TYPE
    if len(given) == 1 and given <= {samples.SAMPLE_TYPE, samples.BATCH_TYPE}:
        return given.pop()
    shown = b", ".join(sorted(given)).decode(errors="replace")[:200]
    return Rejection(Reason.UNSUPPORTED_SCHEMA, f"content-type {shown} is not a streamlearn type")


def _duplicate(memory: PartitionMemory, here: dict[str, None], event_id: str) -> Rejection | None:
    """A duplicate of an id accepted earlier, or by an earlier row of the same record."""
    if event_id in here:
        return Rejection(Reason.DUPLICATE, f"event id {event_id!r} is repeated in the record")
    first = memory.accepted_at(event_id)
    if first is None:
        return None
    return Rejection(Reason.DUPLICATE, f"event id {event_id!r} was accepted at raw offset {first}")


def _source(record: RawRecord) -> bytes:
    return f"{record.topic}:{record.partition}:{record.offset}".encode()


def _rows_header(rows: list[int]) -> tuple[str, bytes]:
    return samples.ROWS, np.asarray(rows, dtype="<i4").tobytes()


def _train_rows(record: RawRecord, columns: samples.Columns, rows: list[int]) -> Output:
    whole = len(rows) == len(columns)
    value = record.value if whole else samples.encode_batch(columns.take(np.asarray(rows)))
    headers = [
        (samples.CONTENT_TYPE, samples.BATCH_TYPE),
        (samples.SOURCE, _source(record)),
        _rows_header(rows),
    ]
    return Output(record.key, value or b"", headers, None, columns.stream, len(rows))


def _dead_row(
    record: RawRecord, columns: samples.Columns, row: int, rejection: Rejection
) -> Output:
    value = samples.encode_batch(columns.take(np.asarray([row])))
    headers = [
        (samples.CONTENT_TYPE, samples.BATCH_TYPE),
        (samples.SOURCE, _source(record)),
        _rows_header([row]),
        (samples.EVENT_ID, columns.event_ids[row].encode()),
        (samples.REASON, rejection.reason.value.encode()),
        (samples.DETAIL, bounded(rejection.detail.encode())),
    ]
    return Output(columns.keys[row].encode(), value, headers, rejection, columns.stream)


def _dead(record: RawRecord, rejection: Rejection, event_id: str = "", stream: str = "") -> Output:
    """The input record, bytes untouched, with why it was rejected and where it came from."""
    kept = [(k, v) for k, v in record.headers if not k.startswith(_OURS)]
    headers = [
        *kept,
        (samples.SOURCE, _source(record)),
        (samples.REASON, rejection.reason.value.encode()),
        (samples.DETAIL, bounded(rejection.detail.encode())),
    ]
    if event_id:
        headers.append((samples.EVENT_ID, event_id.encode()))
    return Output(record.key, record.value or b"", headers, rejection, stream)


_OURS = "streamlearn-"
MIN_MAX_BYTES = MIN_FIT_BYTES


def _fit(output: Output, limit: int) -> Output:
    """A dead letter cut to `limit` bytes (`shared.dead_letters.fit`).

    Training outputs always fit (`Router._within_limit`).
    """
    key, value, headers = fit(output.key, output.value, output.headers, limit)
    return replace(output, key=key, value=value, headers=headers)
