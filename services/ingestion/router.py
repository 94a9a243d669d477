"""Routing of one raw record: valid samples to training, everything else to the dead letters.

Transport-free: a `RawRecord` in, `Output`s out. A record holding one `Sample` gives one
output. A `SampleBatch` gives one training record with its valid rows (the original bytes
when all are valid) and one dead letter per rejected row, itself a one-row batch, so the
high-rate path stays columnar end to end. A batch broken as a whole (undecodable, wrong
shape) is one dead letter with the original bytes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

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
)
from shared import samples
from shared.errors import InvalidArgument
from streamlearn.v1 import sample_pb2, stream_pb2

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
    value: bytes
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


class Router:
    """Validates and de-duplicates raw records into training records and dead letters."""

    def __init__(
        self,
        lookup: Lookup,
        limits: TimeLimits,
        max_bytes: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._lookup = lookup
        self._limits = limits
        self._max_bytes = max_bytes
        self._clock = clock

    def route(self, record: RawRecord, memory: PartitionMemory) -> list[Output]:
        """The outputs of `record`; empty when an earlier run routed all of it already."""
        if memory.routed_before(record.offset, WHOLE):
            return []
        if len(record.value) > self._max_bytes:
            detail = f"{len(record.value)} bytes, the limit is {self._max_bytes}"
            return [_dead(record, Rejection(Reason.OVERSIZED, detail))]
        if samples.is_batch(record.headers):
            return self._route_batch(record, memory)
        return [self._route_sample(record, memory)]

    def rejections(self, value: bytes, headers: samples.Headers) -> list[Rejection]:
        """What routing this record would reject, without any memory of earlier records.

        The gRPC front door uses it to refuse invalid samples before they reach Kafka.
        """
        record = RawRecord("request", 0, 0, None, value, headers, self._clock())
        outputs = self.route(record, PartitionMemory(window_s=60.0))
        return [o.rejection for o in outputs if o.rejection is not None]

    def _route_sample(self, record: RawRecord, memory: PartitionMemory) -> Output:
        try:
            sample = sample_pb2.Sample.FromString(record.value)
        except DecodeError as exc:
            return _dead(record, Rejection(Reason.UNDECODABLE, f"not a Sample: {exc}"))
        definition = self._lookup(sample.stream, record.written_at)
        now = self._clock()
        rejection = check_envelope(sample.schema_version, sample.stream, definition)
        if rejection is None and definition is not None:
            rejection = check_sample(sample, definition, self._limits, int(now * 1000))
            rejection = rejection or _duplicate(memory, sample.event_id)
        if rejection:
            return _dead(record, rejection, sample.event_id, sample.stream)
        memory.accept(sample.event_id, record.offset, now)
        headers = [
            (samples.CONTENT_TYPE, samples.SAMPLE_TYPE),
            (samples.SOURCE, _source(record)),
            (samples.EVENT_ID, sample.event_id.encode()),
        ]
        return Output(record.key, record.value, headers, None, sample.stream)

    def _route_batch(self, record: RawRecord, memory: PartitionMemory) -> list[Output]:
        try:
            batch = sample_pb2.SampleBatch.FromString(record.value)
            columns = samples.decode_batch(batch)
        except (DecodeError, InvalidArgument) as exc:
            return [_dead(record, Rejection(Reason.UNDECODABLE, f"not a SampleBatch: {exc}"))]
        definition = self._lookup(batch.stream, record.written_at)
        whole = check_envelope(batch.schema_version, batch.stream, definition)
        if whole is None and definition is not None:
            whole = check_batch(columns, definition)
        if whole is not None or definition is None:  # (check_envelope rejects unknown streams)
            return [
                _dead(record, whole or Rejection(Reason.UNKNOWN_STREAM, ""), stream=batch.stream)
            ]
        now = self._clock()
        rejected = check_rows(columns, definition, self._limits, int(now * 1000))
        good: list[int] = []
        outputs: list[Output] = []
        for row, event_id in enumerate(columns.event_ids):
            if memory.routed_before(record.offset, row):
                continue
            rejection = rejected.get(row) or _duplicate(memory, event_id)
            if rejection:
                outputs.append(_dead_row(record, columns, row, rejection))
            else:
                memory.accept(event_id, record.offset, now)
                good.append(row)
        if good:
            outputs.insert(0, _train_rows(record, columns, good))
        return outputs


def _duplicate(memory: PartitionMemory, event_id: str) -> Rejection | None:
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
    return Output(record.key, value, headers, None, columns.stream, len(rows))


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
        (samples.DETAIL, rejection.detail.encode()),
    ]
    return Output(columns.keys[row].encode(), value, headers, rejection, columns.stream)


def _dead(record: RawRecord, rejection: Rejection, event_id: str = "", stream: str = "") -> Output:
    """The input record, bytes untouched, with why it was rejected and where it came from."""
    kept = [(k, v) for k, v in record.headers if not k.startswith("streamlearn-")]
    headers = [
        *kept,
        (samples.SOURCE, _source(record)),
        (samples.REASON, rejection.reason.value.encode()),
        (samples.DETAIL, rejection.detail.encode()),
    ]
    if event_id:
        headers.append((samples.EVENT_ID, event_id.encode()))
    return Output(record.key, record.value, headers, rejection, stream)
