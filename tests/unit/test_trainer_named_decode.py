"""Named samples at the trainer's edge: featurized in order, pinned schema, config, lineage."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY

from services.trainer import wire
from services.trainer.config import ModelSpec, TrainerConfig
from services.trainer.decode import PinnedStream, decode
from services.trainer.learner import Learner
from services.trainer.progress import Positions
from services.trainer.settings import reconcile
from services.trainer.versions import VersionPublisher
from shared import samples
from shared.errors import ConfigError
from shared.fakes import FakeMessage
from shared.features import FeatureSpace, Featurizer, Value, put_values
from streamlearn.v1 import sample_pb2, stream_pb2

DEFINITION = stream_pb2.StreamDefinition(
    name="s",
    dense_dim=2,
    sparse_buckets=1 << 12,
    label_kind=stream_pb2.LABEL_KIND_BINARY,
    revision=3,
    features=stream_pb2.FeatureSchema(
        numeric=["age", "price"],
        categorical=["city", "device"],
        crosses=[stream_pb2.FeatureCross(left="city", right="device")],
    ),
)
SPACE = FeatureSpace.from_definition(DEFINITION)
assert SPACE is not None


def featurizer() -> Featurizer:
    assert SPACE is not None
    return Featurizer(SPACE)


def named(values: dict[str, Value], label: int = 1, weight: float = 0.0) -> bytes:
    sample = sample_pb2.Sample(event_id="e", stream="s", class_index=label, weight=weight)
    put_values(sample, values)
    return sample.SerializeToString()


def positional(dense: list[float], label: int = 0) -> bytes:
    return sample_pb2.Sample(stream="s", dense=dense, class_index=label).SerializeToString()


def messages(values: list[bytes | FakeMessage]) -> list[FakeMessage]:
    return [
        v if isinstance(v, FakeMessage) else FakeMessage("t", 0, i, b"k", v)
        for i, v in enumerate(values)
    ]


def batch_record(rows: int, offset: int) -> FakeMessage:
    columns = samples.Columns(
        "s",
        [f"b{r}" for r in range(rows)],
        ["k"] * rows,
        np.zeros(rows, np.int64),
        np.full((rows, 2), 7.0, np.float32),
        np.ones(rows, np.int32),
        np.ones(rows, np.float32),
    )
    headers = [(samples.CONTENT_TYPE, samples.BATCH_TYPE)]
    return FakeMessage("t", 0, offset, b"k", samples.encode_batch(columns), headers)


def refused(kind: str) -> float:
    value = REGISTRY.get_sample_value("streamlearn_trainer_features_refused_total", {"kind": kind})
    return value or 0.0


def test_the_features_field_number_matches_the_contract() -> None:
    assert sample_pb2.Sample.DESCRIPTOR.fields_by_name["features"].number == wire.FEATURES


def test_named_records_are_featurized_as_the_shared_featurizer_does() -> None:
    rows = [
        {"age": 31, "price": 9.5, "city": "Oslo", "device": "ios"},
        {"age": 40, "price": -2.0, "city": "Rome", "device": 7},
        {"age": 0, "price": 1e6, "city": "Oslo", "device": "android"},
    ]
    batch, bad = decode(
        messages([named(r, label=i % 2, weight=2.0) for i, r in enumerate(rows)]),
        "binary",
        2,
        featurizer(),
    )
    expected_dense, expected_ids = featurizer().rows(rows)
    assert bad == 0 and batch.named
    np.testing.assert_array_equal(batch.features.numpy(), expected_dense)
    assert batch.sparse is not None and batch.sparse.dtype.is_floating_point is False
    np.testing.assert_array_equal(batch.sparse.numpy(), expected_ids)
    assert batch.sparse.shape == (3, 3) and (batch.sparse.numpy() > 0).all()
    assert batch.labels.tolist() == [0.0, 1.0, 0.0]
    assert batch.weights is not None and batch.weights.tolist() == [2.0, 2.0, 2.0]


def test_missing_values_are_nan_and_id_zero_and_are_tallied_per_field() -> None:
    featurize = featurizer()
    batch, bad = decode(
        messages([named({"age": 5, "city": "Oslo"}), named({"price": 1.5, "device": "web"})]),
        "binary",
        2,
        featurize,
    )
    assert bad == 0
    x, ids = batch.features.numpy(), batch.sparse.numpy()  # type: ignore[union-attr]
    assert x[0, 0] == 5 and np.isnan(x[0, 1]) and np.isnan(x[1, 0]) and x[1, 1] == 1.5
    assert ids[0, 0] > 0 and ids[0, 1] == 0 and ids[0, 2] == 0  # no device: no cross either
    assert ids[1, 0] == 0 and ids[1, 1] > 0 and ids[1, 2] == 0
    assert featurize.tally.rows == 2
    assert featurize.tally.missing == {"price": 1, "device": 1, "age": 1, "city": 1}


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_records_the_featurizer_refuses_are_unusable_rows_counted_in_place(task: str) -> None:
    good = {"age": 1, "price": 2, "city": "a", "device": "b"}
    mixed = sample_pb2.Sample(stream="s", dense=[1.0, 2.0], class_index=1)
    put_values(mixed, good)
    wrong_type = sample_pb2.Sample(stream="s", class_index=1)
    wrong_type.features["age"].category = "old"
    not_finite = sample_pb2.Sample(stream="s", class_index=1)
    not_finite.features["price"].number = float("inf")
    records = [
        named(good),
        named({**good, "colour": "red"}),  # unknown_feature
        wrong_type.SerializeToString(),
        not_finite.SerializeToString(),
        mixed.SerializeToString(),
        named(good, label=0),
    ]
    before = {
        k: refused(k) for k in ("unknown_feature", "wrong_type", "non_finite", "mixed_features")
    }
    featurize = featurizer()
    batch, bad = decode(messages(records), task, 2, featurize)
    assert bad == 4 and len(batch) == 6
    x, y = batch.features.numpy(), batch.labels.numpy()
    assert np.isnan(x[1:5]).all() and (batch.sparse.numpy()[1:5] == 0).all()  # type: ignore[union-attr]
    if task == "multiclass":
        assert y.tolist() == [1, -1, -1, -1, -1, 0]  # no class: the guard refuses -1
    else:
        assert y[0] == 1 and np.isnan(y[1:5]).all() and y[5] == 0
    assert np.isfinite(x[[0, 5]]).all()
    assert {k: refused(k) - v for k, v in before.items()} == dict.fromkeys(before, 1.0)
    assert featurize.tally.rows == 2  # refused records are not tallied


def test_named_positional_and_batch_records_keep_their_order() -> None:
    full = {"age": 3, "price": 4, "city": "x", "device": "y"}
    records = messages(
        [
            positional([1.0, 2.0]),
            named(full),
            b"\xff\xff",
            named({"age": 8}),
            positional([5.0, 6.0], label=1),
        ]
    )
    records.insert(2, batch_record(3, 2))
    batch, bad = decode(records, "binary", 2, featurizer())
    assert bad == 1 and len(batch) == 8 and batch.named
    x, ids = batch.features.numpy(), batch.sparse.numpy()  # type: ignore[union-attr]
    np.testing.assert_array_equal(x[0], [1, 2])
    np.testing.assert_array_equal(x[1], [3, 4])
    np.testing.assert_array_equal(x[2:5], np.full((3, 2), 7.0))
    assert np.isnan(x[5]).all() and np.isnan(batch.labels[5].item())  # the garbage record
    assert x[6, 0] == 8 and np.isnan(x[6, 1])
    np.testing.assert_array_equal(x[7], [5, 6])
    assert (ids[[0, 2, 3, 4, 5, 7]] == 0).all()  # positional rows have no hashed ids
    assert (ids[1] > 0).all() and (ids[6] == 0).all()
    assert batch.labels.tolist()[:5] == [0, 1, 1, 1, 1] and batch.labels[7].item() == 1


def test_without_a_schema_named_records_are_unusable_and_resolve_is_asked_only_for_them() -> None:
    asked: list[int] = []

    def resolve() -> Featurizer | None:
        asked.append(1)
        return None

    records = messages([positional([1.0, 2.0]), named({"age": 1})])
    batch, bad = decode(records[:1], "binary", 2, resolve=resolve)
    assert (bad, asked, batch.named, batch.sparse) == (0, [], False, None)
    before = refused("no_feature_schema")
    batch, bad = decode(records, "binary", 2, resolve=resolve)
    assert (bad, asked, batch.named) == (1, [1], False)
    assert np.isnan(batch.features[1].numpy()).all()
    assert refused("no_feature_schema") - before == 1
    batch, bad = decode(records, "binary", 2, resolve=featurizer)
    assert bad == 0 and batch.named and batch.features[1, 0].item() == 1


def test_a_featurizer_of_another_width_than_the_model_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="2 numeric features, the model 5"):
        decode(messages([positional([1.0, 2.0])]), "binary", 5, featurizer())


# --- the config fits the schema ------------------------------------------------------------


def test_the_config_is_filled_from_the_schema_when_left_unset() -> None:
    config = reconcile(TrainerConfig(), DEFINITION)
    assert (config.model.features, config.model.sparse_buckets) == (2, 1 << 12)
    same = TrainerConfig(model=ModelSpec(features=2, sparse_buckets=1 << 12))
    assert reconcile(same, DEFINITION) == same
    positional_stream = stream_pb2.StreamDefinition(name="p", dense_dim=9)
    assert reconcile(TrainerConfig(), positional_stream) == TrainerConfig()
    assert reconcile(TrainerConfig(), None) == TrainerConfig()


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (ModelSpec(features=5), "model.features is 5 but stream 's' .* has 2 numeric"),
        (ModelSpec(sparse_buckets=99), "model.sparse_buckets is 99 but .* sparse_buckets 4096"),
    ],
)
def test_a_config_that_contradicts_the_schema_is_refused_naming_both(
    model: ModelSpec, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        reconcile(TrainerConfig(model=model), DEFINITION)


def test_a_numeric_only_schema_refuses_sparse_buckets() -> None:
    numeric = stream_pb2.StreamDefinition(
        name="n", dense_dim=1, features=stream_pb2.FeatureSchema(numeric=["a"])
    )
    assert reconcile(TrainerConfig(), numeric).model.sparse_buckets == 0
    with pytest.raises(ConfigError, match="no categorical features"):
        reconcile(TrainerConfig(model=ModelSpec(sparse_buckets=8)), numeric)


# --- the pinned definition ----------------------------------------------------------------


def test_a_stream_defined_late_is_looked_up_once_and_pinned_if_the_model_fits() -> None:
    lookups: list[int] = []

    def lookup() -> stream_pb2.StreamDefinition | None:
        lookups.append(1)
        return DEFINITION

    pinned = PinnedStream("s", reconcile(TrainerConfig(), DEFINITION), None, lookup)
    assert pinned.featurizer is None
    found = pinned.resolve()
    assert found is not None and found.space == SPACE and pinned.definition == DEFINITION
    assert pinned.resolve() is found and lookups == [1]


def test_a_late_schema_the_model_does_not_fit_stops_the_trainer() -> None:
    pinned = PinnedStream("s", TrainerConfig(), None, lambda: DEFINITION)
    with pytest.raises(ConfigError, match="restart the trainer"):
        pinned.resolve()


def test_no_schema_found_late_leaves_named_records_unusable_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lookups: list[int] = []

    def lookup() -> stream_pb2.StreamDefinition | None:
        lookups.append(1)
        return None

    pinned = PinnedStream("s", TrainerConfig(), None, lookup)
    with caplog.at_level(logging.ERROR):
        assert pinned.resolve() is None and pinned.resolve() is None
    assert lookups == [1]
    assert sum("without a pinned feature schema" in r.message for r in caplog.records) == 1


def test_a_later_revision_keeps_the_pinned_one_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    current = [DEFINITION]
    pinned = PinnedStream("s", TrainerConfig(), DEFINITION, lambda: current[0], notice_every_s=0)
    pinned.notice()
    newer = stream_pb2.StreamDefinition()
    newer.CopyFrom(DEFINITION)
    newer.revision = 4
    newer.features.numeric.append("height")
    current[0] = newer
    with caplog.at_level(logging.WARNING):
        pinned.notice()
        pinned.notice()
    assert sum("definition changed" in r.message for r in caplog.records) == 1
    assert pinned.definition == DEFINITION and pinned.featurizer is not None
    assert pinned.featurizer.space.revision == 3


def test_the_definition_is_read_again_at_most_every_notice_period() -> None:
    lookups: list[int] = []

    def lookup() -> stream_pb2.StreamDefinition | None:
        lookups.append(1)
        return DEFINITION

    pinned = PinnedStream("s", TrainerConfig(), DEFINITION, lookup, notice_every_s=3600)
    for _ in range(5):
        pinned.notice()
    assert lookups == []  # a trainer does not read the catalog at every version


# --- lineage and the drift tag ------------------------------------------------------------


@dataclass
class Registered:
    version: int


class FakeRegistry:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def register(self, model: str, data: bytes, **kwargs: Any) -> Registered:
        self.calls.append(kwargs)
        return Registered(len(self.calls))


class FakeExporter:
    def export(self) -> bytes:
        return b"onnx"


def test_versions_name_the_pinned_definition_and_the_first_after_a_drift_is_tagged() -> None:
    config = reconcile(TrainerConfig(), DEFINITION)
    learner = Learner(config, "cpu")
    registry = FakeRegistry()
    pinned = PinnedStream("s", config, DEFINITION)
    publisher = VersionPublisher(registry, "m", "s", "t-0", learner, pinned)  # type: ignore[arg-type]
    publisher.exporter = FakeExporter()  # type: ignore[assignment]
    positions = Positions({"t:0": 10}, {"t:0": 0})
    for step in range(4):
        learner.applied += 10
        if step == 1:
            learner.drifts, learner.last_drift_event = 1, 17
        publisher.publish(positions)
    assert [c["lineage"].stream_definition for c in registry.calls] == [DEFINITION] * 4
    assert [c.get("tags") for c in registry.calls] == [
        None,
        {"drift": "detected at event 17"},
        None,
        None,
    ]
    resumed = VersionPublisher(registry, "m", "s", "t-0", learner, pinned)  # type: ignore[arg-type]
    resumed.resume(publisher.last_version, publisher.drifts_tagged)
    resumed.exporter = FakeExporter()  # type: ignore[assignment]
    learner.applied += 1
    resumed.publish(positions)
    assert registry.calls[-1].get("tags") is None  # that drift was tagged before the restart


def test_a_version_of_a_stream_not_defined_has_no_definition_in_lineage() -> None:
    learner = Learner(TrainerConfig(model=ModelSpec(features=2)), "cpu")
    registry = FakeRegistry()
    publisher = VersionPublisher(registry, "m", "s", "t-0", learner)  # type: ignore[arg-type]
    publisher.exporter = FakeExporter()  # type: ignore[assignment]
    learner.applied = 1
    publisher.publish(Positions({"t:0": 1}, {"t:0": 0}))
    assert not registry.calls[0]["lineage"].HasField("stream_definition")
