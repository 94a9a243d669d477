"""Replay learns and scores a slice the way the stream's trainer does: its stream only."""

from __future__ import annotations

import numpy as np

from services.replay.runs import Run
from services.replay.scoring import Scored
from services.trainer.config import ModelSpec, OptimizerSpec, TrainerConfig
from shared.fakes import FakeMessage
from streamlearn.v1 import sample_pb2

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
    def predict(x: np.ndarray) -> np.ndarray:
        return np.full((len(x), 1), 0.5, np.float32)

    scored = Scored("v1", "binary", 2, predict, streams=frozenset({"b"}))
    scored.feed(records(40))  # type: ignore[arg-type]
    assert scored.total.events == 20 and scored.other_streams == 20
