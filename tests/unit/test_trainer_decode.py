"""The compiled wire decoder agrees with the protobuf library, and refuses what it should."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from services.trainer import wire
from services.trainer.batching import mini_batch_cut
from services.trainer.decode import decode
from shared import samples
from shared.fakes import FakeMessage
from streamlearn.v1 import sample_pb2


def msg(value: bytes, offset: int = 0) -> FakeMessage:
    return FakeMessage("t", 0, offset, b"k", value)


def full_sample(i: int, **label: object) -> sample_pb2.Sample:
    return sample_pb2.Sample(
        schema_version=1,
        event_id=f"e{i}",
        key="k",
        stream="s",
        event_time=Timestamp(seconds=9),
        dense=[i + 0.5, -1.25, 3e-3],
        sparse=sample_pb2.SparseFeatures(indices=[3], values=[1]),
        weight=0.0 if i % 2 else 2.5,
        text="free text",
        attributes={"a": "b"},
        **label,
    )


def test_field_numbers_match_the_contract() -> None:
    fields = sample_pb2.Sample.DESCRIPTOR.fields_by_name
    assert (
        fields["dense"].number,
        fields["regression"].number,
        fields["class_index"].number,
        fields["weight"].number,
    ) == (wire.DENSE, wire.REGRESSION, wire.CLASS_INDEX, wire.WEIGHT)


@pytest.mark.parametrize(
    ("task", "label"),
    [
        ("regression", {"regression": -2.75}),
        ("binary", {"class_index": 1}),
        ("multiclass", {"class_index": 0}),
    ],
)
def test_decodes_like_the_protobuf_library(task: str, label: dict[str, object]) -> None:
    samples = [full_sample(i, **label) for i in range(6)]
    batch, bad = decode([msg(s.SerializeToString(), i) for i, s in enumerate(samples)], task, 3)
    assert bad == 0
    np.testing.assert_array_equal(
        batch.features.numpy(), np.array([list(s.dense) for s in samples], np.float32)
    )
    expected = next(iter(label.values()))
    assert batch.labels.tolist() == [expected] * 6
    assert batch.weights is not None and batch.weights.tolist() == [2.5, 1.0] * 3


def test_unusable_records_become_nan_rows_that_are_counted() -> None:
    good = full_sample(1, class_index=1).SerializeToString()
    records = [
        good,
        b"\xff\xff\xff",
        good[:-3],
        full_sample(2).SerializeToString(),
        sample_pb2.Sample(dense=[1.0], class_index=1).SerializeToString(),
        good,
    ]
    batch, bad = decode([msg(v, i) for i, v in enumerate(records)], "binary", 3)
    rows_ok = np.isfinite(batch.features.numpy()).all(axis=1) & np.isfinite(batch.labels.numpy())
    assert rows_ok.tolist() == [True, False, False, False, False, True]
    assert bad == 3  # garbage, truncated, wrong shape (the unlabeled one is the guard's)


def batch_record(rows: int, offset: int, features: int = 3) -> FakeMessage:
    columns = samples.Columns(
        "s",
        [f"b{offset}-{r}" for r in range(rows)],
        ["k"] * rows,
        np.zeros(rows, np.int64),
        np.full((rows, features), offset, np.float32) + np.arange(rows)[:, None],
        np.arange(rows, dtype=np.int32) % 2,
        np.ones(rows, np.float32),
    )
    headers = [(samples.CONTENT_TYPE, samples.BATCH_TYPE)]
    return FakeMessage("t", 0, offset, b"k", samples.encode_batch(columns), headers)


def test_batch_records_contribute_their_rows_in_place() -> None:
    records = [
        msg(full_sample(0, class_index=1).SerializeToString(), 0),
        batch_record(3, 100),
        msg(full_sample(1, class_index=0).SerializeToString(), 2),
        batch_record(2, 200, features=5),  # wrong shape: one skipped row
    ]
    batch, bad = decode(records, "binary", 3)
    assert bad == 1 and len(batch) == 6
    np.testing.assert_array_equal(batch.features[1:4, 0].numpy(), [100, 101, 102])
    assert batch.labels.tolist()[:5] == [1.0, 0.0, 1.0, 0.0, 0.0]
    assert batch.features[0, 0].item() == 0.5 and batch.features[4, 0].item() == 1.5
    assert np.isnan(batch.features[5].numpy()).all()


def test_mini_batches_are_cut_by_the_stream_not_by_polling() -> None:
    singles = [msg(full_sample(i, class_index=1).SerializeToString(), i) for i in range(7)]
    stream = [*singles[:3], batch_record(5, 3), *singles[3:]]
    whole, held = mini_batch_cut(stream, 2)
    assert [len(s) for s in whole] == [4, 4] and len(held) == 0
    first, held_first = mini_batch_cut(stream[:2], 2)
    second, held_second = mini_batch_cut(held_first + stream[2:], 2)
    assert [m.offset() for s in first + second for m in s] == [m.offset() for s in whole for m in s]
    assert [len(s) for s in first + second] == [2, 2, 4]  # same rows, same mini-batches
    assert held_second == []


NEGATIVE_TAG = b"\xf8" + b"\xff" * 8 + b"\x01"  # -8: a 10-byte varint, "field" -1, wire 0


@pytest.mark.parametrize("tag", [b"\x00", b"\x07", b"\x80\x80\x80\x80\x80\x01", NEGATIVE_TAG])
def test_field_zero_and_tags_past_32_bits_are_malformed_as_protobuf_says(tag: bytes) -> None:
    good = sample_pb2.Sample(event_id="e", dense=[1.0], regression=0.5).SerializeToString()
    value = tag + b"\x00" + good  # field 0 (varint, or a 64-bit-wide tag) then a valid sample
    with pytest.raises(DecodeError):
        sample_pb2.Sample.FromString(value)
    _, bad = decode([FakeMessage("t", 0, 0, b"k", value)], "regression", 1)
    assert bad == 1
