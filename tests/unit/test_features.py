"""The shared featurizer: slots, hashing, missing values, errors, and fuzzed records."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import InvalidArgument
from shared.features import (
    FeatureSpace,
    Featurizer,
    Value,
    bucket,
    category_text,
    put_values,
    sample_values,
)
from shared.streams import check_definition
from streamlearn.v1 import sample_pb2, stream_pb2

SPACE = FeatureSpace(
    numeric=("age", "income"),
    categorical=("country", "device"),
    crosses=(("country", "device"),),
    buckets=1 << 12,
    revision=3,
)


def test_numeric_fill_their_slots_in_schema_order_and_missing_is_nan() -> None:
    dense, _ = Featurizer(SPACE).row({"income": 1200.5, "country": "FR"})
    assert math.isnan(dense[0])
    assert dense[1] == pytest.approx(1200.5)


def test_categories_hash_into_their_slot_with_the_field_as_namespace() -> None:
    _, ids = Featurizer(SPACE).row({"country": "FR", "device": "FR"})
    assert ids[0] == bucket("country=FR", SPACE.buckets)
    assert ids[1] == bucket("device=FR", SPACE.buckets)
    assert ids[0] != ids[1]  # the same text in two fields is two features
    assert ids[2] == bucket("country=FR^device=FR", SPACE.buckets)


def test_a_missing_category_is_the_padding_id_and_drops_its_crosses() -> None:
    _, ids = Featurizer(SPACE).row({"country": "FR"})
    assert ids[0] != 0
    assert ids[1] == 0
    assert ids[2] == 0


def test_hash_is_stable_across_processes() -> None:
    # Pinned values: a change of hash would silently retrain every served model's buckets.
    assert bucket("country=FR", 1 << 20) == 1 + int.from_bytes(
        __import__("hashlib").blake2b(b"country=FR", digest_size=8).digest(), "little"
    ) % ((1 << 20) - 1)
    assert 1 <= bucket("", 2) < 2


@pytest.mark.parametrize(
    ("value", "text"),
    [(7, "7"), (7.0, "7"), ("7", "7"), (True, "true"), (2.5, "2.5"), (-0.0, "0")],
)
def test_category_text_is_canonical(value: object, text: str) -> None:
    assert category_text(value) == text  # type: ignore[arg-type]


def test_unseen_categories_are_never_an_error() -> None:
    featurizer = Featurizer(SPACE)
    for i in range(100):
        _, ids = featurizer.row({"country": f"never-seen-{i}"})
        assert 1 <= ids[0] < SPACE.buckets


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"colour": "red"}, "unknown feature"),
        ({"age": "thirty"}, "numeric"),
        ({"age": float("inf")}, "inf"),
        ({"country": float("nan")}, "not finite"),
        ({"country": "x" * 2000}, "bytes"),
    ],
)
def test_bad_records_are_refused_with_the_reason(record: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        Featurizer(SPACE).row(record)  # type: ignore[arg-type]


def test_missing_values_are_tallied_per_field() -> None:
    featurizer = Featurizer(SPACE)
    featurizer.row({"age": 1, "income": 2, "country": "a", "device": "b"})
    featurizer.row({"age": 1, "country": "a"})
    assert featurizer.tally.rows == 2
    assert featurizer.tally.missing == {"income": 1, "device": 1}


def test_rows_names_the_bad_record() -> None:
    with pytest.raises(InvalidArgument, match="record 1"):
        Featurizer(SPACE).rows([{"age": 1}, {"age": "x"}])


def test_sample_round_trip_keeps_values_and_types() -> None:
    sample = sample_pb2.Sample()
    values: dict[str, Value] = {
        "age": 31,
        "country": "FR",
        "device": None,
        "flag": True,
        "id": 2**60,
        "x": 0.5,
    }
    put_values(sample, values)
    assert sample_values(sample) == {
        "age": 31,
        "country": "FR",
        "flag": True,
        "id": 2**60,  # exact: an int64, not a double
        "x": 0.5,
    }
    assert type(sample_values(sample)["flag"]) is bool


def test_a_value_featurizes_the_same_from_the_wire_and_in_process() -> None:
    space = FeatureSpace(numeric=("ts",), categorical=("on", "n"), buckets=1 << 16)
    values = {"ts": 2**60, "on": np.bool_(True), "n": np.int64(2**60 + 1)}
    sample = sample_pb2.Sample()
    put_values(sample, values)  # type: ignore[arg-type]
    wire_dense, wire_ids = Featurizer(space).sample(sample)
    local_dense, local_ids = Featurizer(space).row(values)  # type: ignore[arg-type]
    assert wire_dense == pytest.approx(local_dense)
    assert (wire_ids == local_ids).all()
    text_ids = Featurizer(space).row({"on": "true", "n": str(2**60 + 1)})[1]
    assert (text_ids == local_ids).all()  # the CSV's text, the SDK's values: one bucket


def test_a_definition_with_schema_must_match_dense_dim_and_buckets() -> None:
    definition = stream_pb2.StreamDefinition(
        name="s",
        dense_dim=1,
        sparse_buckets=0,
        label_kind=stream_pb2.LABEL_KIND_BINARY,
        features=stream_pb2.FeatureSchema(numeric=["a", "b"], categorical=["c"]),
    )
    with pytest.raises(InvalidArgument) as caught:
        check_definition(definition)
    assert "dense_dim 1 != 2" in str(caught.value)
    assert "sparse_buckets >= 2" in str(caught.value)


def test_schema_problems_are_named() -> None:
    space = FeatureSpace(numeric=("a", "a"), categorical=("c",), crosses=(("c", "z"),), buckets=8)
    problems = " ".join(space.problems())
    assert "named twice" in problems
    assert "cross cxz" in problems
    with pytest.raises(InvalidArgument):
        Featurizer(space)


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=50),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["age", "income", "country", "device", "x"]), _values))
def test_fuzzed_records_give_valid_rows_or_a_clear_error(record: dict[str, object]) -> None:
    featurizer = Featurizer(SPACE)
    try:
        dense, ids = featurizer.row(record)  # type: ignore[arg-type]
    except InvalidArgument:
        return
    assert dense.shape == (2,)
    assert dense.dtype == np.float32
    assert ids.shape == (3,)
    assert ((ids >= 0) & (ids < SPACE.buckets)).all()
    assert not np.isinf(dense).any()


@pytest.mark.parametrize(
    ("record", "kind"),
    [
        ({"colour": "red"}, "unknown_feature"),
        ({"age": "thirty"}, "wrong_type"),
        ({"country": [1, 2]}, "wrong_type"),
        ({"age": 1e39}, "non_finite"),
        ({"age": 10**400}, "non_finite"),
        ({"country": "x" * 2000}, "oversized"),
    ],
)
def test_check_names_the_kind_of_problem_and_counts_nothing(
    record: dict[str, object], kind: str
) -> None:
    featurizer = Featurizer(SPACE)
    problem = featurizer.check(record)  # type: ignore[arg-type]
    assert problem is not None
    assert problem.kind == kind
    assert featurizer.check({"age": 3, "country": "FR"}) is None
    assert featurizer.tally.rows == 0
