"""The feedback and prediction-log contracts: round trips, clear refusals, fuzzed decoders."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.errors import InvalidArgument
from shared.feedback import (
    MAX_ID_CHARS,
    Feedback,
    FeedbackProblem,
    Label,
    PredictionRecord,
    decode_feedback,
    decode_prediction,
    encode_feedback,
    encode_prediction,
)
from streamlearn.v1 import feedback_pb2, sample_pb2

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
T0 = 1_700_000_000_123


def feedback(**changes: object) -> Feedback:
    fields: dict[str, object] = {
        "event_id": "req-1",
        "stream": "clicks",
        "label": Label.class_index(1),
        "event_time_ms": T0,
        "weight": 1.0,
    }
    return Feedback(**{**fields, **changes})  # type: ignore[arg-type]


def prediction(**changes: object) -> PredictionRecord:
    fields: dict[str, object] = {
        "event_id": "req-1",
        "stream": "clicks",
        "model": "ctr",
        "version": 7,
        "dense": (0.5, -1.25, 3.0),
        "sparse_ids": (0, 17, 4095),
        "outputs": (("score", (0.25,)), ("probabilities", (0.75, 0.25))),
        "timestamp_ms": T0,
    }
    return PredictionRecord(**{**fields, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "label",
    [Label.regression(-2.5), Label.class_index(0), Label.class_index(3), Label.multi_label([0, 4])],
)
def test_feedback_round_trips_with_every_label_kind(label: Label) -> None:
    original = feedback(label=label, weight=0.5)
    assert decode_feedback(encode_feedback(original)) == original


def test_default_weight_travels_as_zero_and_comes_back_as_one() -> None:
    message = feedback_pb2.Feedback.FromString(encode_feedback(feedback()))
    assert message.weight == 0.0 and message.schema_version == 1
    assert decode_feedback(encode_feedback(feedback())).weight == 1.0


def test_prediction_round_trips() -> None:
    original = prediction()
    assert decode_prediction(encode_prediction(original)) == original


def test_prediction_keeps_missing_values_as_nan() -> None:
    decoded = decode_prediction(encode_prediction(prediction(dense=(math.nan, 1.0))))
    assert math.isnan(decoded.dense[0]) and decoded.dense[1] == 1.0


def raw_feedback(**fields: object) -> bytes:
    base: dict[str, object] = {"schema_version": 1, "event_id": "e", "stream": "s"}
    message = feedback_pb2.Feedback(**{**base, **fields})  # type: ignore[arg-type]
    message.event_time.FromMilliseconds(T0)
    return message.SerializeToString()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff\xff\xff", "undecodable"),
        (raw_feedback(class_index=1, schema_version=2), "unsupported_schema"),
        (raw_feedback(class_index=1, event_id=""), "missing_event_id"),
        (raw_feedback(class_index=1, event_id="x" * (MAX_ID_CHARS + 1)), "oversized_name"),
        (raw_feedback(class_index=1, stream=""), "missing_stream"),
        (raw_feedback(), "missing_label"),
        (raw_feedback(regression=math.inf), "non_finite"),
        (raw_feedback(regression=math.nan), "non_finite"),
        (raw_feedback(class_index=-1), "label_out_of_range"),
        (raw_feedback(multi_label=sample_pb2.MultiLabel(classes=[1, 1])), "label_out_of_range"),
        (raw_feedback(class_index=1, weight=-1.0), "invalid_weight"),
        (raw_feedback(class_index=1, weight=math.nan), "invalid_weight"),
    ],
)
def test_malformed_feedback_is_refused_with_its_reason(data: bytes, reason: str) -> None:
    with pytest.raises(FeedbackProblem) as caught:
        decode_feedback(data)
    assert caught.value.reason == reason
    assert isinstance(caught.value, InvalidArgument)  # a client sees INVALID_ARGUMENT


def test_feedback_without_or_with_bad_time_is_refused() -> None:
    unset = feedback_pb2.Feedback(schema_version=1, event_id="e", stream="s", class_index=1)
    with pytest.raises(FeedbackProblem) as caught:
        decode_feedback(unset.SerializeToString())
    assert caught.value.reason == "missing_time"
    unset.event_time.seconds, unset.event_time.nanos = 5, 2_000_000_000
    with pytest.raises(FeedbackProblem) as caught:
        decode_feedback(unset.SerializeToString())
    assert caught.value.reason == "invalid_time"
    unset.event_time.seconds, unset.event_time.nanos = -5, 0
    with pytest.raises(FeedbackProblem) as caught:
        decode_feedback(unset.SerializeToString())
    assert caught.value.reason == "invalid_time"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"model": ""}, "missing_model"),
        ({"version": 0}, "missing_version"),
        ({"sparse_ids": (3, -1)}, "invalid_sparse_id"),
        ({"timestamp_ms": 0}, "missing_time"),
        ({"event_id": ""}, "missing_event_id"),
        ({"stream": "s" * 300}, "oversized_name"),
    ],
)
def test_malformed_prediction_is_refused_with_its_reason(
    changes: dict[str, object], reason: str
) -> None:
    message = feedback_pb2.PredictionRecord.FromString(encode_prediction(prediction()))
    for name, value in changes.items():
        if name == "timestamp_ms":
            message.ClearField("timestamp")
        elif isinstance(value, tuple):
            getattr(message, name)[:] = value
        else:
            setattr(message, name, value)
    with pytest.raises(FeedbackProblem) as caught:
        decode_prediction(message.SerializeToString())
    assert caught.value.reason == reason


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_decode_to_feedback_or_a_problem(data: bytes) -> None:
    try:
        decoded = decode_feedback(data)
    except FeedbackProblem as exc:
        assert exc.reason and str(exc)
        return
    assert decoded.event_id and decoded.stream and decoded.event_time_ms > 0
    assert decode_feedback(encode_feedback(decoded)) == decoded


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_decode_to_a_prediction_or_a_problem(data: bytes) -> None:
    try:
        decoded = decode_prediction(data)
    except FeedbackProblem as exc:
        assert exc.reason and str(exc)
        return
    assert decoded.event_id and decoded.model and decoded.version > 0
    again = decode_prediction(encode_prediction(decoded))
    assert encode_prediction(again) == encode_prediction(decoded)


def mutations(valid: bytes) -> st.SearchStrategy[bytes]:
    """Valid bytes with a few bytes replaced, cut or extended: deep in the parser."""
    flips = st.lists(st.tuples(st.integers(0, len(valid) - 1), st.integers(0, 255)), max_size=4)
    return st.tuples(flips, st.integers(0, len(valid)), st.binary(max_size=8)).map(
        lambda m: _mutate(valid, *m)
    )


def _mutate(valid: bytes, flips: list[tuple[int, int]], cut: int, tail: bytes) -> bytes:
    data = bytearray(valid)
    for at, value in flips:
        data[at] = value
    return bytes(data[:cut]) + tail


@FUZZ
@given(mutations(encode_feedback(feedback(label=Label.multi_label([1, 2]), weight=0.5))))
def test_mutated_feedback_decodes_or_is_refused(data: bytes) -> None:
    try:
        decode_feedback(data)
    except FeedbackProblem as exc:
        assert exc.reason


@FUZZ
@given(mutations(encode_prediction(prediction())))
def test_mutated_prediction_decodes_or_is_refused(data: bytes) -> None:
    try:
        decode_prediction(data)
    except FeedbackProblem as exc:
        assert exc.reason


def test_label_round_trips_through_plain_values() -> None:
    for label in (Label.regression(1.5), Label.class_index(2), Label.multi_label([3, 1])):
        assert Label.from_plain(label.to_plain()) == label
    with pytest.raises(FeedbackProblem):
        Label.from_plain(["class_index", "one"])
