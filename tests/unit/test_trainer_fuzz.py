"""Fuzzing the trainer's decoding of records: any bytes, any headers, any declared length.

Each record either decodes to rows or becomes a row the learner's guard skips and counts;
nothing raises, nothing loops, and the rows a record yields are bounded by its size (a
declared length of 2**63 allocates nothing). The stream filter reads the same records
without raising either, and the learner learns whatever the decoder returns.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.trainer import wire
from services.trainer.batching import Batcher, StreamFilter
from services.trainer.config import ModelSpec, TrainerConfig
from services.trainer.decode import decode
from services.trainer.learner import Learner
from shared import samples
from shared.fakes import FakeMessage
from streamlearn.v1 import sample_pb2

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TASKS = ("regression", "binary", "multiclass")
BATCH_HEADERS = [(samples.CONTENT_TYPE, samples.BATCH_TYPE)]


def varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def valid_sample(draw: st.DrawFn) -> bytes:
    dense = draw(st.lists(st.floats(width=32), max_size=6))
    label = draw(
        st.sampled_from(
            [
                {},
                {"regression": draw(st.floats())},
                {"class_index": draw(st.integers(-(2**31), 2**31 - 1))},
            ]
        )
    )
    return sample_pb2.Sample(
        event_id=draw(st.text(max_size=8)),
        stream=draw(st.sampled_from(["demo", "other", ""])),
        dense=dense,
        weight=draw(st.floats(width=32)),
        served_score=draw(st.lists(st.floats(width=32), max_size=3)),
        **label,
    ).SerializeToString()


def valid_batch(draw: st.DrawFn) -> bytes:
    rows = draw(st.integers(0, 5))
    dim = draw(st.integers(0, 5))
    columns = samples.Columns(
        draw(st.sampled_from(["demo", "other"])),
        [f"e{r}" for r in range(rows)],
        ["k"] * rows,
        np.zeros(rows, np.int64),
        np.asarray(
            draw(st.lists(st.floats(width=32), min_size=rows * dim, max_size=rows * dim)),
            np.float32,
        ).reshape(rows, dim),
        np.arange(rows, dtype=np.int32) % 2,
        np.ones(rows, np.float32),
    )
    return samples.encode_batch(columns)


@st.composite
def mutated(draw: st.DrawFn, batch: bool) -> bytes:
    """A valid record with a few bytes flipped, inserted, deleted, or cut off."""
    value = bytearray(valid_batch(draw) if batch else valid_sample(draw))
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "huge"]))
        at = draw(st.integers(0, len(value)))
        if kind == "flip" and at < len(value):
            value[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            value[at:at] = draw(st.binary(max_size=4))
        elif kind == "delete":
            del value[at : at + draw(st.integers(1, 4))]
        elif kind == "truncate":
            del value[at:]
        else:  # a length-delimited field declaring a huge (or, wrapped, negative) length
            field = draw(st.integers(1, 15))
            value[at:at] = varint(field << 3 | 2) + varint(draw(st.integers(2**31, 2**64 - 1)))
    return bytes(value)


headers_strategy = st.one_of(
    st.none(),
    st.just(BATCH_HEADERS),
    st.lists(
        st.tuples(
            st.sampled_from([samples.CONTENT_TYPE, samples.SOURCE, "x"]),
            st.one_of(
                st.binary(max_size=8), st.just(samples.BATCH_TYPE), st.none(), st.text(max_size=4)
            ),
        ),
        max_size=3,
    ),
)

record_strategy = st.one_of(
    st.tuples(st.binary(max_size=64), headers_strategy),
    st.tuples(mutated(batch=False), headers_strategy),
    st.tuples(mutated(batch=True), st.just(BATCH_HEADERS)),
    st.tuples(mutated(batch=True), headers_strategy),
)


def messages(records: list[tuple[bytes, object]]) -> list[FakeMessage]:
    return [FakeMessage("t", 0, i, b"k", v, h) for i, (v, h) in enumerate(records)]  # type: ignore[arg-type]


def check_decodes(
    records: list[tuple[bytes, object]], task: str, features: int, outputs: int = 1
) -> None:
    batch, bad = decode(messages(records), task, features, outputs=outputs)  # type: ignore[arg-type]
    total = sum(len(v) for v, _ in records)
    if batch.served is not None:
        assert batch.served.shape == (len(batch), outputs)
    assert 0 <= bad <= len(records)
    assert len(records) <= len(batch) <= len(records) + total  # rows bounded by the bytes
    assert batch.features.shape == (len(batch), features)
    assert batch.weights is not None and len(batch.weights) == len(batch) == len(batch.labels)


@FUZZ
@given(
    st.lists(record_strategy, min_size=1, max_size=8),
    st.sampled_from(TASKS),
    st.integers(1, 6),
    st.integers(1, 3),
)
def test_any_records_decode_to_rows_or_counted_skips(
    records: list[tuple[bytes, object]], task: str, features: int, outputs: int
) -> None:
    check_decodes(records, task, features, outputs)


@FUZZ
@given(st.lists(record_strategy, min_size=1, max_size=8), st.integers(1, 3))
def test_the_stream_filter_and_batcher_take_any_records(
    records: list[tuple[bytes, object]], size: int
) -> None:
    skipped: list[int] = []
    batcher = Batcher(size, StreamFilter({"demo"}, lambda _, n: skipped.append(n)))
    segments = batcher.add(messages(records))  # type: ignore[arg-type]
    learned = sum(len(s) for s in segments) + batcher.pending
    assert learned + sum(skipped) == len(records)  # each record is kept or skipped, once
    assert batcher.settled() in ({}, {"t:0": len(records)})


@settings(FUZZ, max_examples=150)  # each example builds a learner
@given(st.lists(record_strategy, min_size=1, max_size=6), st.sampled_from(TASKS))
def test_the_learner_learns_whatever_the_decoder_returns(
    records: list[tuple[bytes, object]], task: str
) -> None:
    kind = {"regression": "linear", "binary": "logistic", "multiclass": "softmax"}[task]
    learner = Learner(TrainerConfig(model=ModelSpec(kind=kind, features=3, classes=3)), "cpu")
    batch, _ = decode(messages(records), task, 3)  # type: ignore[arg-type]
    learner.learn(batch)
    assert learner.applied + learner.skipped + learner.diverging == len(batch)


@FUZZ
@given(
    st.integers(1, 15),
    st.integers(0, 2**64 - 1),
    st.text(max_size=8),
    st.binary(max_size=16),
)
def test_declared_lengths_never_read_past_the_record(
    field: int, length: int, event_id: str, after: bytes
) -> None:
    before = sample_pb2.Sample(event_id=event_id, dense=[1.0, 2.0]).SerializeToString()
    value = before + varint(field << 3 | 2) + varint(length) + after
    buf = np.frombuffer(value, dtype=np.uint8)
    starts, ends = np.array([0]), np.array([len(value)])
    x, y, w = np.full((1, 2), np.nan, np.float32), np.full(1, np.nan), np.ones(1, np.float32)
    status = np.zeros(1, np.int8)
    wire.decode_samples(buf, starts, ends, x, y, w, status)
    found, spans = np.empty(1, np.int64), np.empty((1, 2), np.int64)
    wanted = np.frombuffer(b"demo", np.uint8)
    wire.match_streams(buf, starts, ends, np.array([5]), wanted, np.array([4]), found, spans)
    if length > len(after):  # the field claims more bytes than the record has left
        assert status[0] == wire.MALFORMED and found[0] == wire.UNREADABLE
    else:
        assert status[0] in (wire.OK, wire.MALFORMED, wire.WRONG_SHAPE)
        assert found[0] in (0, wire.FOREIGN, wire.UNREADABLE)
    if found[0] != wire.UNREADABLE:
        assert 0 <= spans[0, 0] <= spans[0, 1] <= len(value)


def test_a_length_wrapping_to_step_back_is_malformed_not_an_endless_loop() -> None:
    # Field 2 declaring 2**64 - 11 bytes: read as -11, it would step back to its own tag.
    value = varint(2 << 3 | 2) + varint(2**64 - 11)
    assert len(value) == 11
    check_decodes([(value, None)], "binary", 2)
    skipped: list[int] = []
    Batcher(1, StreamFilter({"demo"}, lambda _, n: skipped.append(n))).add(
        messages([(value, None)])  # type: ignore[arg-type]
    )


@FUZZ
@given(st.lists(st.floats(width=32), min_size=1, max_size=64), st.integers(1, 64))
def test_extreme_shapes_decode_or_are_refused_as_wrong_shape(
    dense: list[float], features: int
) -> None:
    value = sample_pb2.Sample(stream="demo", dense=dense, class_index=1).SerializeToString()
    batch, bad = decode(messages([(value, None)]), "binary", features)  # type: ignore[arg-type]
    assert bad == (0 if len(dense) == features else 1)
    if len(dense) == features:
        np.testing.assert_array_equal(batch.features.numpy()[0], np.float32(dense))


def _reference_cut(
    records: list[FakeMessage], wanted: list[bool], size: int
) -> tuple[list[list[int]], dict[str, int]]:
    """What the batcher must return, record by record (offsets stand for the records)."""
    grouped: dict[str, list[FakeMessage]] = {}
    read_to: dict[str, int] = {}
    for msg, keep in zip(records, wanted, strict=True):
        key = f"{msg.topic()}:{msg.partition()}"
        read_to[key] = msg.offset() + 1
        if keep:
            grouped.setdefault(key, []).append(msg)
    segments = []
    for kept in grouped.values():  # one segment per partition: its whole mini-batches
        whole = len(kept) - len(kept) % size
        if whole:
            segments.append([m.offset() for m in kept[:whole]])
    return segments, read_to


@FUZZ
@given(
    st.lists(
        st.tuples(st.sampled_from(["t", "u"]), st.integers(0, 3), st.booleans()),
        min_size=1,
        max_size=40,
    ),
    st.integers(1, 3),
)
def test_the_batcher_cuts_any_interleaving_of_partitions_as_record_by_record(
    layout: list[tuple[str, int, bool]], size: int
) -> None:
    """Grouping by partition in bulk gives the cuts and read-to offsets of a plain loop."""
    records, wanted = [], []
    for offset, (topic, partition, keep) in enumerate(layout):
        value = sample_pb2.Sample(stream="demo" if keep else "other").SerializeToString()
        records.append(FakeMessage(topic, partition, offset, None, value))
        wanted.append(keep)
    batcher = Batcher(size, StreamFilter({"demo"}))
    segments = [[m.offset() for m in s] for s in batcher.add(records)]  # type: ignore[arg-type]
    expected, read_to = _reference_cut(records, wanted, size)
    assert segments == expected
    settled = {k: v for k, v in read_to.items() if batcher.settled().get(k) is not None}
    assert batcher.settled() == settled
    assert batcher.pending == sum(wanted) - sum(len(s) for s in segments)


_HEADER_NAMES = st.sampled_from([samples.CONTENT_TYPE, "Content-Type", "trace", ""])
_HEADER_VALUES = st.sampled_from([samples.BATCH_TYPE, samples.SAMPLE_TYPE, b"", b"x"])


@given(
    st.lists(
        st.one_of(
            st.none(),
            st.lists(st.tuples(_HEADER_NAMES, _HEADER_VALUES), max_size=3),
        ),
        max_size=20,
    )
)
def test_batch_flags_agree_with_each_records_headers(headers: list) -> None:
    records = [FakeMessage("t", 0, i, None, b"", h) for i, h in enumerate(headers)]
    assert samples.batch_flags(records) == [
        samples.is_batch(samples.headers_of(m)) for m in records
    ]
