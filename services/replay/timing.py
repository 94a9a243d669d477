"""When each decoded row happened and how long its label took, read from the records.

`decode` gives the learner's rows and no times, so the replay reads them here, row for
row in decode's order: a `Sample` record is one row; a `SampleBatch` record is as many rows
as decode makes of it (asked of decode itself, so the two cannot disagree).

A row's time is its sample's event time when set, else its record's Kafka timestamp
(`UNKNOWN` when the record has none either). A row's recorded delay is its sample's
`LABEL_DELAY_MS` attribute, written by the joiner on joined samples; a row without one
(a producer's sample, a `SampleBatch` row) has none. Records come from outside: one that
does not parse keeps its Kafka timestamp and no delay (decode makes it a row the learner
skips), and an attribute that is not a whole number of milliseconds in range counts as no
delay and is counted in `Times.bad_delays`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message
from google.protobuf.message import DecodeError

from services.joiner.outputs import LABEL_DELAY_MS
from services.replay.delay import MAX_DELAY_MS
from services.trainer.decode import decode
from shared import samples
from shared.errors import InvalidArgument
from shared.features import Featurizer
from streamlearn.v1 import sample_pb2

UNKNOWN = np.iinfo(np.int64).min  # a row without any time: the replay's clock stands in
MAX_TIME_MS = 10**15  # past the year 30000: no real event time, and far from int64's end


@dataclass(frozen=True)
class Times:
    """Per row: event time (unix ms) and recorded label delay (ms); unusable delays seen."""

    event_ms: np.ndarray
    delay_ms: np.ndarray
    bad_delays: int = 0


def row_times(
    records: Sequence[Message], task: str, features: int, featurizer: Featurizer | None
) -> Times:
    """The times and recorded delays of the rows `decode(records, ...)` makes, in its order."""
    event_ms: list[int] = []
    delay_ms: list[int] = []
    bad = 0
    for msg in records:
        kafka_ms = _kafka_ms(msg)
        if samples.is_batch(samples.headers_of(msg)):
            rows = len(decode([msg], task, features, featurizer)[0])
            event_ms += _batch_times(msg.value() or b"", rows, kafka_ms)
            delay_ms += [0] * rows
            continue
        event, delay, unusable = _sample_time(msg.value() or b"", kafka_ms)
        event_ms.append(event)
        delay_ms.append(delay)
        bad += unusable
    return Times(np.asarray(event_ms, np.int64), np.asarray(delay_ms, np.int64), bad)


def _kafka_ms(msg: Message) -> int:
    kind, ms = msg.timestamp()
    return UNKNOWN if kind == TIMESTAMP_NOT_AVAILABLE or not 0 <= ms < MAX_TIME_MS else int(ms)


def _sample_time(value: bytes, kafka_ms: int) -> tuple[int, int, bool]:
    """(event time, recorded delay, whether the delay attribute was unusable)."""
    try:
        sample = sample_pb2.Sample.FromString(value)
    except DecodeError:
        return kafka_ms, 0, False
    stamp = sample.event_time
    event = stamp.seconds * 1000 + stamp.nanos // 1_000_000
    if not 0 < event < MAX_TIME_MS:  # unset (or absurd): when it was written stands in
        event = kafka_ms
    text = sample.attributes.get(LABEL_DELAY_MS)
    if text is None:
        return event, 0, False
    delay = _delay(text)
    return event, delay or 0, delay is None


def _delay(text: str) -> int | None:
    """The attribute's milliseconds, or None when it is not a whole number in range."""
    if not text.isascii() or not text.isdigit() or len(text) > 12:
        return None
    value = int(text)
    return value if value <= MAX_DELAY_MS else None


def _batch_times(value: bytes, rows: int, kafka_ms: int) -> list[int]:
    """A batch record's row times; its Kafka timestamp where a row has none (or it is unusable)."""
    try:
        columns = samples.decode_batch(sample_pb2.SampleBatch.FromString(value))
    except (DecodeError, InvalidArgument):
        return [kafka_ms] * rows
    if len(columns) != rows:  # decode made one unusable row of it
        return [kafka_ms] * rows
    times = columns.event_time_ms.astype(np.int64)
    usable = (times > 0) & (times < MAX_TIME_MS)
    return np.where(usable, times, kafka_ms).tolist()  # type: ignore[no-any-return]
