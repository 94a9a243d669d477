"""The SDK's dict form: a dict under `features` is named features, a list stays positional."""

from __future__ import annotations

import numpy as np
import pytest

from services.ingestion.dedup import PartitionMemory
from shared.errors import InvalidArgument
from shared.features import FeatureSpace, Featurizer, Value
from streamlearn.client.producer import to_sample
from tests.unit.test_ingestion_router import NOW, STREAMS, record, router

SPACE = FeatureSpace.from_definition(STREAMS["named"])


def test_a_dict_of_features_becomes_named_values_and_no_dense() -> None:
    sample = to_sample(
        {"key": "u7", "features": {"age": 31, "country": "FR", "device": None}, "label": 1},
        stream="named",
    )
    assert list(sample.dense) == []
    assert sample.features["age"].WhichOneof("kind") == "integer"
    assert sample.features["age"].integer == 31
    assert sample.features["country"].category == "FR"
    assert "device" not in sample.features  # None is missing: nothing is sent
    assert (sample.key, sample.stream, sample.class_index) == ("u7", "named", 1)


def test_named_samples_from_the_sdk_featurize_as_their_dict() -> None:
    assert SPACE is not None
    values: dict[str, Value] = {"age": 31, "income": 2.5, "country": "FR", "device": "ios"}
    sample = to_sample({"features": values, "label": 0})
    dense, ids = Featurizer(SPACE).sample(sample)
    want_dense, want_ids = Featurizer(SPACE).row(values)
    np.testing.assert_array_equal(dense, want_dense)
    np.testing.assert_array_equal(ids, want_ids)


def test_a_named_sample_from_the_sdk_passes_ingestion() -> None:
    sample = to_sample(
        {"features": {"age": 31, "country": "FR"}, "label": 1, "event_time": NOW - 1},
        stream="named",
    )
    [out] = router().route(record(sample.SerializeToString()), PartitionMemory(60))
    assert out.rejection is None


@pytest.mark.parametrize(
    "features",
    [[0.5, 1.5, 2.5], (0.5, 1.5, 2.5), np.array([0.5, 1.5, 2.5], dtype=np.float64)],
    ids=["list", "tuple", "array"],
)
def test_a_list_or_array_of_features_stays_positional(features: object) -> None:
    sample = to_sample({"features": features, "label": 1})
    assert list(sample.dense) == [0.5, 1.5, 2.5]
    assert len(sample.features) == 0


def test_dense_is_positional_too() -> None:
    assert list(to_sample({"dense": [1.0, 2.0], "label": 1}).dense) == [1.0, 2.0]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"features": {"age": 1}, "dense": [1.0]}, "not both"),
        ({"features": {"age": [1, 2]}}, "'age'"),
        ({"features": {7: 1.0}}, "feature names are text"),
        ({"features": "age=31"}, "dict of name -> value"),
        ({"features": [[1.0, 2.0], [3.0, 4.0]]}, "shape (2, 2)"),
        ({"features": [1.0, "x"]}, "dict of name -> value"),
        ({"features": {"age": 1}, "label": "yes"}, "label must be"),
    ],
    ids=["dict and dense", "a list value", "a number as name", "text", "2-D", "text in list",
         "text label"],
)  # fmt: skip
def test_malformed_features_are_invalid_argument_with_a_clear_message(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(").replace(")", r"\)")):
        to_sample(fields)


def test_a_multilabel_sample_without_positive_classes_still_has_a_label() -> None:
    sample = to_sample({"features": [1.0], "labels": []})
    assert sample.WhichOneof("label") == "multi_label"
    assert list(sample.multi_label.classes) == []
