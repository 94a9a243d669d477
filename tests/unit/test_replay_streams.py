"""Replay learns and scores a slice the way the stream's trainer does: its stream only."""

from __future__ import annotations

import numpy as np

from services.replay.runs import Run
from services.replay.scoring import Scored
from services.trainer.config import ModelSpec, OptimizerSpec, TrainerConfig
from shared.fakes import FakeMessage
from shared.features import FeatureSpace, Featurizer, put_values
from streamlearn.v1 import sample_pb2, stream_pb2

CONFIG = TrainerConfig(
    model=ModelSpec(kind="logistic", features=2), optimizer=OptimizerSpec(name="sgd", lr=0.1)
)


def records(n: int) -> list[FakeMessage]:
    """`n` samples alternating between streams `a` and `b`, same feature count."""
    out = []
    for i in range(n):
        stream = "ab"[i % 2]
        value = sample_pb2.Sample(
            event_id=f"{stream}{i}", stream=stream, dense=[i / n, 1.0], class_index=i % 2
        ).SerializeToString()
        out.append(FakeMessage("train", 0, i, b"k", value))
    return out


def test_a_run_of_one_stream_learns_only_that_streams_records() -> None:
    only_a = Run("a", CONFIG, every=10, streams=frozenset({"a"}))
    everything = Run("all", CONFIG, every=10)
    for run in (only_a, everything):
        run.feed(records(40))  # type: ignore[arg-type]
    assert only_a.learner.applied == 20
    assert everything.learner.applied == 40


def test_scoring_a_version_counts_only_its_streams_records() -> None:
    def predict(x: np.ndarray, ids: np.ndarray | None) -> np.ndarray:
        return np.full((len(x), 1), 0.5, np.float32)

    scored = Scored("v1", "binary", 2, predict, streams=frozenset({"b"}))
    scored.feed(records(40))  # type: ignore[arg-type]
    assert scored.total.events == 20 and scored.other_streams == 20


NAMED = stream_pb2.StreamDefinition(
    name="n",
    dense_dim=1,
    sparse_buckets=32,
    label_kind=stream_pb2.LABEL_KIND_BINARY,
    revision=2,
    features=stream_pb2.FeatureSchema(numeric=["x"], categorical=["c"]),
)


def named_records(n: int) -> list[FakeMessage]:
    """Named samples of stream `n`, every third without `x`."""
    out = []
    for i in range(n):
        sample = sample_pb2.Sample(event_id=f"n{i}", stream="n", class_index=i % 2)
        put_values(sample, {"x": None if i % 3 == 0 else i / n, "c": f"v{i % 4}"})
        out.append(FakeMessage("train", 0, i, b"k", sample.SerializeToString()))
    return out


def test_a_run_of_a_named_stream_fits_its_config_and_featurizes_as_the_trainer() -> None:
    run = Run("named", CONFIG.model_copy(update={"model": ModelSpec()}), every=10, definition=NAMED)
    assert (run.config.model.features, run.config.model.sparse_buckets) == (1, 32)
    run.feed(named_records(30))  # type: ignore[arg-type]
    assert (run.learner.applied, run.learner.skipped) == (30, 0)
    assert run.report()["stream_revision"] == 2
    positional = Run("positional", CONFIG.model_copy(update={"model": ModelSpec(features=1)}))
    positional.feed(named_records(30))  # type: ignore[arg-type]
    assert (positional.learner.applied, positional.learner.skipped) == (0, 30)


def test_scoring_a_named_version_feeds_it_the_hashed_ids_and_the_missing_values() -> None:
    seen: list[tuple[np.ndarray, np.ndarray | None]] = []

    def predict(x: np.ndarray, ids: np.ndarray | None) -> np.ndarray:
        seen.append((x, ids))
        return np.full((len(x), 1), 0.5, np.float32)

    space = FeatureSpace.from_definition(NAMED)
    assert space is not None
    scored = Scored("v2", "binary", 1, predict, featurizer=Featurizer(space))
    scored.feed(named_records(12))  # type: ignore[arg-type]
    assert scored.total.events == 12  # rows missing `x` are scored too: the graph imputes
    [(x, ids)] = seen
    assert np.isnan(x[::3]).all() and ids is not None and (ids > 0).all()
