"""Ingestion of named samples: validated against the stream's feature schema, not featurized."""

from __future__ import annotations

import math

import pytest

from services.ingestion import validation
from services.ingestion.dedup import PartitionMemory
from services.ingestion.reasons import Reason
from services.ingestion.router import Lookup, Output, RawRecord, Router
from services.ingestion.validation import TimeLimits
from shared.features import MAX_CATEGORY_BYTES, Featurizer
from shared.streams import check_definition
from streamlearn.v1 import sample_pb2, stream_pb2
from tests.unit.test_ingestion_router import NOW, STREAMS, record, router
from tests.unit.test_ingestion_router import sample as positional

Values = dict[str, float | str | None]


def named(values: Values, stream: str = "named", **fields: object) -> sample_pb2.Sample:
    """A named sample of `stream` (label 1 unless `fields` say otherwise)."""
    message = positional(stream=stream, dense=[], **fields)
    for name, value in values.items():
        slot = message.features[name]
        if isinstance(value, str):
            slot.category = value
        elif value is not None:
            slot.number = value
        else:
            slot.SetInParent()  # a FeatureValue with neither number nor category: missing
    return message


def route(message: sample_pb2.Sample) -> Output:
    [out] = router().route(record(message.SerializeToString()), PartitionMemory(60))
    return out


FULL: Values = {"age": 31.0, "income": 52_000.0, "country": "FR", "device": "ios"}
VALID = {
    "every field": FULL,
    "numbers only": {"age": 31.0, "income": 1.5},
    "categories only": {"country": "FR", "device": "ios"},
    "one category, so no cross": {"country": "FR"},
    "a number for a categorical feature": {"country": 33.0},
    "a field set to nothing": {"age": None, "country": "FR"},
    "an empty category": {"country": ""},
}


@pytest.mark.parametrize("values", VALID.values(), ids=VALID.keys())
def test_a_named_sample_missing_fields_is_valid_and_forwarded_unchanged(values: Values) -> None:
    message = named(values)
    out = route(message)
    assert out.rejection is None, out.rejection
    assert out.value == message.SerializeToString()  # not featurized: the trainer does that


LONG = "x" * (MAX_CATEGORY_BYTES + 1)
INVALID = {
    "unknown field": ({**FULL, "colour": "red"}, Reason.UNKNOWN_FEATURE, "'colour'"),
    "text in a numeric field": ({"age": "old"}, Reason.WRONG_TYPE, "'age'"),
    "NaN number": ({"age": math.nan}, Reason.NON_FINITE, "'age'"),
    "infinite number": ({"income": -math.inf}, Reason.NON_FINITE, "'income'"),
    "beyond float32": ({"income": 1e39}, Reason.NON_FINITE, "'income'"),
    "NaN category": ({"country": math.nan}, Reason.NON_FINITE, "not finite"),
    "category too long": ({"device": LONG}, Reason.OVERSIZED_CATEGORY, "'device'"),
}


@pytest.mark.parametrize(
    ("values", "reason", "named_in_detail"), INVALID.values(), ids=INVALID.keys()
)
def test_each_schema_problem_is_a_dead_letter_with_its_reason_and_detail(
    values: Values, reason: Reason, named_in_detail: str
) -> None:
    message = named(values)
    out = route(message)
    assert out.rejection is not None and out.rejection.reason == reason
    assert named_in_detail in out.rejection.detail
    assert out.value == message.SerializeToString()  # the original bytes, for redrive


def test_named_features_on_a_stream_without_a_schema_are_refused() -> None:
    out = route(named({"age": 1.0}, stream="bin"))
    assert out.rejection is not None
    assert out.rejection.reason == Reason.NO_FEATURE_SCHEMA
    assert "'bin'" in out.rejection.detail and "no feature schema" in out.rejection.detail


@pytest.mark.parametrize(
    "extra",
    [
        {"dense": [1.0, 2.0]},
        {"sparse": sample_pb2.SparseFeatures(indices=[3], values=[1.0])},
    ],
    ids=["dense", "sparse"],
)
def test_named_features_beside_positional_ones_are_refused(extra: dict[str, object]) -> None:
    message = named(FULL)
    message.MergeFrom(sample_pb2.Sample(**extra))  # type: ignore[arg-type]
    out = route(message)
    assert out.rejection is not None and out.rejection.reason == Reason.MIXED_FEATURES


def test_positional_samples_of_a_schema_stream_keep_their_rules() -> None:
    # dense_dim == len(numeric): two dense values are a valid positional sample
    assert route(positional(stream="named", dense=[1.0, 2.0])).rejection is None
    wrong = route(positional(stream="named", dense=[1.0, 2.0, 3.0])).rejection
    assert wrong is not None and wrong.reason == Reason.WRONG_DIMENSION
    nan = route(positional(stream="named", dense=[1.0, math.nan])).rejection
    assert nan is not None and nan.reason == Reason.NON_FINITE


def test_the_other_rules_still_apply_to_named_samples() -> None:
    no_label = route(named(FULL, class_index=None)).rejection
    assert no_label is not None and no_label.reason == Reason.MISSING_LABEL
    no_id = route(named(FULL, event_id="")).rejection
    assert no_id is not None and no_id.reason == Reason.MISSING_EVENT_ID
    memory = PartitionMemory(60)
    [first] = router().route(record(named(FULL).SerializeToString(), offset=0), memory)
    assert first.rejection is None
    [again] = router().route(record(named(FULL).SerializeToString(), offset=1), memory)
    assert again.rejection is not None and again.rejection.reason == Reason.DUPLICATE


def test_a_schema_that_bypassed_the_definition_check_rejects_named_samples() -> None:
    broken = stream_pb2.StreamDefinition()
    broken.CopyFrom(STREAMS["named"])
    broken.name = "broken"
    broken.features.crosses.add(left="country", right="nowhere")
    with pytest.raises(Exception, match="cross"):
        check_definition(broken)
    limits = TimeLimits(max_future_ms=300_000, max_age_ms=86_400_000)
    raw = RawRecord("raw", 0, 0, b"k", named(FULL, stream="broken").SerializeToString(), [])
    [out] = Router(only(broken), limits, 10_000, clock=lambda: NOW).route(raw, PartitionMemory(60))
    assert out.rejection is not None and out.rejection.reason == Reason.NO_FEATURE_SCHEMA
    assert "unusable" in out.rejection.detail and "nowhere" in out.rejection.detail


def test_the_grpc_precheck_names_the_schema_problem() -> None:
    assert router().rejections(named(FULL).SerializeToString(), []) == []
    [rejection] = router().rejections(named({"age": "x"}).SerializeToString(), [])
    assert rejection.reason == Reason.WRONG_TYPE


def only(definition: stream_pb2.StreamDefinition) -> Lookup:
    """A lookup that finds `definition` under any name."""
    return lambda _name, _at: definition


def test_the_featurizer_is_built_once_per_schema_revision(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[int] = []

    class Counting(Featurizer):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            built.append(self.space.revision)

    validation._featurizer.cache_clear()
    monkeypatch.setattr(validation, "Featurizer", Counting)
    revised = stream_pb2.StreamDefinition()
    revised.CopyFrom(STREAMS["named"])
    revised.revision = 2
    limits = TimeLimits(max_future_ms=300_000, max_age_ms=86_400_000)
    for definition in (STREAMS["named"], revised):
        lookup = only(definition)
        for i in range(5):
            message = named(FULL, event_id=f"e{i}")
            raw = RawRecord("raw", 0, i, b"k", message.SerializeToString(), [])
            [out] = Router(lookup, limits, 10_000, clock=lambda: NOW).route(
                raw, PartitionMemory(60)
            )
            assert out.rejection is None
    assert built == [1, 2]
    validation._featurizer.cache_clear()  # no counting featurizer left for other tests
