"""The ingestion core: validation rules, routing, de-duplication and redelivery, without Kafka."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.ingestion.dedup import PartitionMemory
from services.ingestion.reasons import Reason
from services.ingestion.router import WHOLE, RawRecord, Router
from services.ingestion.validation import TimeLimits
from shared import samples
from shared.errors import InvalidArgument
from shared.streams import check_definition
from streamlearn.v1 import sample_pb2, stream_pb2

NOW = 1_800_000_000.0
KIND = stream_pb2.LabelKind
STREAMS = {
    "bin": stream_pb2.StreamDefinition(name="bin", dense_dim=3, label_kind=KIND.LABEL_KIND_BINARY),
    "multi": stream_pb2.StreamDefinition(
        name="multi", dense_dim=2, label_kind=KIND.LABEL_KIND_MULTICLASS, num_classes=4
    ),
    "reg": stream_pb2.StreamDefinition(
        name="reg", dense_dim=2, label_kind=KIND.LABEL_KIND_REGRESSION
    ),
    "tags": stream_pb2.StreamDefinition(
        name="tags", sparse_buckets=100, label_kind=KIND.LABEL_KIND_MULTILABEL, num_classes=3
    ),
    # Named features: numeric age and income, categorical country and device, and their cross.
    "named": stream_pb2.StreamDefinition(
        name="named",
        dense_dim=2,
        sparse_buckets=1024,
        label_kind=KIND.LABEL_KIND_BINARY,
        revision=1,
        features=stream_pb2.FeatureSchema(
            numeric=["age", "income"],
            categorical=["country", "device"],
            crosses=[stream_pb2.FeatureCross(left="country", right="device")],
        ),
    ),
}


def router(max_bytes: int = 10_000) -> Router:
    limits = TimeLimits(max_future_ms=300_000, max_age_ms=86_400_000)
    return Router(lambda name, _at: STREAMS.get(name), limits, max_bytes, clock=lambda: NOW)


def sample(**overrides: object) -> sample_pb2.Sample:
    fields: dict[str, object] = {
        "event_id": "e1", "key": "k", "stream": "bin", "dense": [1.0, 2.0, 3.0], "class_index": 1,
    }  # fmt: skip
    fields.update(overrides)
    message = sample_pb2.Sample(**{k: v for k, v in fields.items() if v is not None})  # type: ignore[arg-type]
    message.event_time.FromMilliseconds(int(NOW * 1000) - 1000)
    return message


def record(value: bytes, offset: int = 0, batch: bool = False) -> RawRecord:
    headers = [(samples.CONTENT_TYPE, samples.BATCH_TYPE)] if batch else []
    return RawRecord("raw", 0, offset, b"k", value, headers)


def route_one(value: bytes, memory: PartitionMemory | None = None) -> list:  # type: ignore[type-arg]
    return router().route(record(value), memory or PartitionMemory(60))


def test_a_valid_sample_goes_to_training_untouched_with_its_source() -> None:
    value = sample().SerializeToString()
    [out] = route_one(value)
    assert out.rejection is None and out.value == value and out.key == b"k"
    assert samples.header(out.headers, samples.SOURCE) == b"raw:0:0"
    assert samples.header(out.headers, samples.EVENT_ID) == b"e1"


def _timestamped(offset_ms: int) -> bytes:
    message = sample()
    message.event_time.FromMilliseconds(int(NOW * 1000) + offset_ms)
    return message.SerializeToString()


def wire(**overrides: object) -> bytes:
    return sample(**overrides).SerializeToString()


def tags(**fields: object) -> bytes:
    return sample_pb2.Sample(event_id="s", stream="tags", **fields).SerializeToString()  # type: ignore[arg-type]


SPARSE_OUT = sample_pb2.SparseFeatures(indices=[100], values=[1.0])
MALFORMED = {
    "garbage bytes": (b"\xff\xfe\xfd not protobuf", Reason.UNDECODABLE),
    "truncated protobuf": (wire()[:9], Reason.UNDECODABLE),
    "unknown stream": (wire(stream="nope"), Reason.UNKNOWN_STREAM),
    "future schema": (wire(schema_version=7), Reason.UNSUPPORTED_SCHEMA),
    "no event id": (wire(event_id=""), Reason.MISSING_EVENT_ID),
    "wrong dimension": (wire(dense=[1.0, 2.0]), Reason.WRONG_DIMENSION),
    "NaN feature": (wire(dense=[1.0, math.nan, 3.0]), Reason.NON_FINITE),
    "inf feature": (wire(dense=[math.inf, 1.0, 3.0]), Reason.NON_FINITE),
    "NaN target": (
        wire(stream="reg", dense=[1.0, 2.0], class_index=None, regression=math.nan),
        Reason.NON_FINITE,
    ),
    "negative weight": (wire(weight=-1.0), Reason.INVALID_WEIGHT),
    "no label": (wire(class_index=None), Reason.MISSING_LABEL),
    "regression label on binary": (wire(class_index=None, regression=0.5), Reason.LABEL_KIND),
    "binary label out of range": (wire(class_index=2), Reason.LABEL_OUT_OF_RANGE),
    "class out of range": (
        wire(stream="multi", dense=[1.0, 2.0], class_index=4),
        Reason.LABEL_OUT_OF_RANGE,
    ),
    "negative class": (wire(class_index=-1), Reason.LABEL_OUT_OF_RANGE),
    "sparse index out of range": (
        tags(sparse=SPARSE_OUT, multi_label=sample_pb2.MultiLabel(classes=[0])),
        Reason.WRONG_DIMENSION,
    ),
    "multi-label class out of range": (
        tags(multi_label=sample_pb2.MultiLabel(classes=[3])),
        Reason.LABEL_OUT_OF_RANGE,
    ),
    "oversized": (wire(text="x" * 20_000), Reason.OVERSIZED),
    "future timestamp": (_timestamped(+3_600_000), Reason.FUTURE_TIMESTAMP),
    "ancient timestamp": (_timestamped(-2 * 86_400_000), Reason.ANCIENT_TIMESTAMP),
}


@pytest.mark.parametrize(("value", "reason"), MALFORMED.values(), ids=MALFORMED.keys())
def test_each_malformed_input_is_a_dead_letter_with_its_reason_and_original_bytes(
    value: bytes, reason: Reason
) -> None:
    [out] = route_one(value)
    assert out.rejection is not None and out.rejection.reason == reason, out.rejection
    if reason == Reason.OVERSIZED:  # cut to fit the limit, its start kept
        assert value.startswith(out.value) and len(out.value) < len(value)
    else:
        assert out.value == value  # the original bytes, for inspection and redrive
    assert samples.header(out.headers, samples.REASON) == reason.value.encode()
    assert samples.header(out.headers, samples.DETAIL)
    assert samples.header(out.headers, samples.SOURCE) == b"raw:0:0"


def test_a_valid_multilabel_sparse_sample_is_accepted() -> None:
    value = tags(
        sparse=sample_pb2.SparseFeatures(indices=[3, 99], values=[1, 2]),
        multi_label=sample_pb2.MultiLabel(classes=[0, 2]),
    )
    [out] = route_one(value)
    assert out.rejection is None


def test_a_second_input_with_an_accepted_event_id_is_a_duplicate() -> None:
    memory = PartitionMemory(60)
    value = sample().SerializeToString()
    [first] = router().route(record(value, offset=0), memory)
    [second] = router().route(record(value, offset=1), memory)
    assert first.rejection is None
    assert second.rejection is not None and second.rejection.reason == Reason.DUPLICATE
    assert "raw offset 0" in second.rejection.detail


def test_a_rejected_event_id_may_be_sent_again_fixed() -> None:
    memory = PartitionMemory(60)
    [bad] = router().route(record(sample(dense=[1.0]).SerializeToString(), 0), memory)
    [fixed] = router().route(record(sample().SerializeToString(), 1), memory)
    assert bad.rejection is not None and fixed.rejection is None


def test_a_redelivered_input_routed_by_an_earlier_run_is_skipped_once() -> None:
    memory = PartitionMemory(60)
    memory.mark_routed_before(5, WHOLE)
    value = sample().SerializeToString()
    assert router().route(record(value, offset=5), memory) == []
    [again] = router().route(record(value, offset=5), memory)  # a later, genuine resend
    assert again.rejection is None


def test_event_ids_are_forgotten_after_the_window() -> None:
    memory = PartitionMemory(window_s=10)
    memory.accept("a", 0, at_s=100.0)
    memory.accept("b", 1, at_s=105.0)
    assert memory.forget_before(112.0) == 1
    assert memory.accepted_at("a") is None and memory.accepted_at("b") == 1


def columns(n: int, stream: str = "bin", dim: int = 3) -> samples.Columns:
    return samples.Columns(
        stream,
        [f"b{i}" for i in range(n)],
        [f"k{i}" for i in range(n)],
        np.full(n, int(NOW * 1000), dtype=np.int64),
        np.ones((n, dim), dtype=np.float32),
        np.array([i % 2 for i in range(n)], dtype=np.int32),
        np.ones(n, dtype=np.float32),
    )


def test_a_valid_batch_goes_to_training_as_is() -> None:
    value = samples.encode_batch(columns(5))
    [out] = router().route(record(value, batch=True), PartitionMemory(60))
    assert out.rejection is None and out.value == value and out.rows == 5
    assert np.frombuffer(samples.header(out.headers, samples.ROWS) or b"", "<i4").tolist() == [
        0,
        1,
        2,
        3,
        4,
    ]


def test_a_batch_is_split_into_its_valid_rows_and_one_dead_letter_per_bad_row() -> None:
    data = columns(6)
    data.dense[1, 0] = np.nan
    data.labels[3] = 7
    data.event_ids[4] = "b0"  # duplicate of row 0
    outputs = router().route(record(samples.encode_batch(data), batch=True), PartitionMemory(60))
    train, *dead = outputs
    kept = samples.decode_batch(sample_pb2.SampleBatch.FromString(train.value))
    assert kept.event_ids == ["b0", "b2", "b5"] and train.rows == 3
    reasons = {samples.header(d.headers, samples.ROWS): d.rejection.reason for d in dead}  # type: ignore[union-attr]
    assert reasons == {
        np.array([1], "<i4").tobytes(): Reason.NON_FINITE,
        np.array([3], "<i4").tobytes(): Reason.LABEL_OUT_OF_RANGE,
        np.array([4], "<i4").tobytes(): Reason.DUPLICATE,
    }
    one = samples.decode_batch(sample_pb2.SampleBatch.FromString(dead[0].value))
    assert one.event_ids == ["b1"] and dead[0].key == b"k1"


def test_a_batch_of_the_wrong_shape_is_one_dead_letter_with_the_original_bytes() -> None:
    value = samples.encode_batch(columns(4, dim=2))
    [out] = router().route(record(value, batch=True), PartitionMemory(60))
    assert out.rejection is not None and out.rejection.reason == Reason.WRONG_DIMENSION
    assert out.value == value


def test_a_batch_whose_columns_disagree_is_undecodable() -> None:
    batch = sample_pb2.SampleBatch(stream="bin", dense_dim=3, event_ids=["a", "b"], keys=["k"])
    [out] = router().route(record(batch.SerializeToString(), batch=True), PartitionMemory(60))
    assert out.rejection is not None and out.rejection.reason == Reason.UNDECODABLE


def test_rows_of_a_partly_routed_batch_are_routed_once() -> None:
    memory = PartitionMemory(60)
    for row in (0, 1, 2):
        memory.mark_routed_before(9, row)
    [train] = router().route(record(samples.encode_batch(columns(5)), 9, batch=True), memory)
    assert samples.decode_batch(sample_pb2.SampleBatch.FromString(train.value)).event_ids == [
        "b3",
        "b4",
    ]


def test_the_grpc_precheck_reports_rejections_without_memory() -> None:
    assert router().rejections(sample().SerializeToString(), []) == []
    [rejection] = router().rejections(sample(dense=[1.0]).SerializeToString(), [])
    assert rejection.reason == Reason.WRONG_DIMENSION


@pytest.mark.parametrize(
    "definition",
    [
        stream_pb2.StreamDefinition(name="", dense_dim=2, label_kind=KIND.LABEL_KIND_BINARY),
        stream_pb2.StreamDefinition(name="x", label_kind=KIND.LABEL_KIND_BINARY),
        stream_pb2.StreamDefinition(name="x", dense_dim=2),
        stream_pb2.StreamDefinition(name="x", dense_dim=2, label_kind=KIND.LABEL_KIND_MULTICLASS),
    ],
)
def test_inconsistent_stream_definitions_are_refused(
    definition: stream_pb2.StreamDefinition,
) -> None:
    with pytest.raises(InvalidArgument):
        check_definition(definition)


def test_batch_codec_round_trips() -> None:
    data = columns(3)
    back = samples.decode_batch(sample_pb2.SampleBatch.FromString(samples.encode_batch(data)))
    assert back.event_ids == data.event_ids and back.keys == data.keys
    np.testing.assert_array_equal(back.dense, data.dense)
    np.testing.assert_array_equal(back.labels, data.labels)
