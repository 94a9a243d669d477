"""Scoring the prediction that was served: the joiner's samples carry it, the trainer scores it.

The trainer's own test-then-train metrics judge its current weights; `served_*` metrics judge
the version that answered in production, on the label that came later (issue #16).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from services.joiner.outputs import Joined, Negative
from services.trainer import checkpoint, wire
from services.trainer.config import ModelSpec, TrainerConfig
from services.trainer.decode import decode
from services.trainer.learner import Learner
from services.trainer.served import ServedScores
from shared import samples
from shared.fakes import FakeMessage
from shared.feedback import Label
from streamlearn.v1 import sample_pb2
from tests.unit.test_joiner_core import T0, fb, pred


def record(label: float | int, served: list[float], dense: tuple[float, ...] = (1.0, 2.0)) -> bytes:
    kind = {"class_index": label} if isinstance(label, int) else {"regression": label}
    sample = sample_pb2.Sample(stream="s", dense=dense, served_score=served, **kind)
    return sample.SerializeToString()


def messages(values: list[bytes | FakeMessage]) -> list[FakeMessage]:
    return [
        v if isinstance(v, FakeMessage) else FakeMessage("t", 0, i, b"k", v)
        for i, v in enumerate(values)
    ]


def unpacked(value: bytes, floats: list[float]) -> bytes:
    """`value` with `served_score` appended as unpacked fixed32 fields (also valid protobuf)."""
    for f in floats:
        value += bytes([wire.SERVED << 3 | 5]) + np.float32(f).tobytes()
    return value


def test_the_field_number_is_the_one_the_scanner_reads() -> None:
    field = sample_pb2.Sample.DESCRIPTOR.fields_by_name["served_score"]
    assert field.number == wire.SERVED


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), max_size=4),
    st.integers(1, 3),
    st.booleans(),
)
def test_served_scores_decode_as_protobuf_reads_them(
    served: list[float], outputs: int, packed: bool
) -> None:
    value = record(1, served) if packed else unpacked(record(1, []), served)
    assert list(sample_pb2.Sample.FromString(value).served_score) == pytest.approx(served)
    batch, bad = decode(messages([value, record(0, [])]), "binary", 2, outputs=outputs)
    assert bad == 0
    if len(served) != outputs:  # none, or not the model's width: nothing to score
        assert batch.served is None
        return
    assert batch.served is not None and batch.served.shape == (2, outputs)
    np.testing.assert_array_equal(batch.served[0].numpy(), np.float32(served))
    assert torch.isnan(batch.served[1]).all()  # the row without one


def test_slow_path_and_batch_rows_keep_their_place() -> None:
    columns = samples.Columns(
        "s",
        ["b0", "b1"],
        ["k", "k"],
        np.zeros(2, np.int64),
        np.ones((2, 2), np.float32),
        np.ones(2, np.int32),
        np.ones(2, np.float32),
    )
    headers = [(samples.CONTENT_TYPE, samples.BATCH_TYPE)]
    batch_record = FakeMessage("t", 0, 1, b"k", samples.encode_batch(columns), headers)
    # A dense of 3 values: the wrong shape for 2 features, so no score either.
    values = [
        record(1, [0.75]),
        batch_record,
        record(0, [0.5], dense=(1, 2, 3)),
        record(0, [0.125]),
    ]
    batch, bad = decode(messages(values), "binary", 2)
    assert bad == 1 and len(batch) == 5
    assert batch.served is not None
    got = batch.served[:, 0].numpy()
    np.testing.assert_array_equal(got[[0, 4]], [0.75, 0.125])
    assert np.isnan(got[1:4]).all()


def test_served_metrics_on_a_constructed_binary_case() -> None:
    scores = ServedScores("binary", 100, "bce")
    served = torch.tensor([[0.9], [0.2], [0.6], [float("nan")]])
    scores.update(served, torch.tensor([1.0, 0.0, 0.0, 1.0]))
    got = scores.snapshot()
    assert got["served_events"] == 3  # the row without a served score is not scored
    assert got["served_accuracy"] == pytest.approx(2 / 3)
    logloss = -(math.log(0.9) + math.log(0.8) + math.log(0.4)) / 3
    assert got["served_logloss"] == pytest.approx(logloss)
    assert got["served_loss"] == pytest.approx(logloss)
    assert got["served_auc"] == pytest.approx(1.0)  # 0.9 above both negatives (0.2, 0.6)


def test_served_metrics_on_constructed_multiclass_and_regression_cases() -> None:
    multi = ServedScores("multiclass", 100, "cross_entropy")
    probabilities = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.5, 0.0]])
    multi.update(probabilities, torch.tensor([0, 2, 7]))  # class 7: not an output, not scored
    got = multi.snapshot()
    assert got["served_events"] == 2 and got["served_accuracy"] == 1.0
    assert got["served_logloss"] == pytest.approx(-(math.log(0.7) + math.log(0.6)) / 2)
    huber = ServedScores("regression", 100, "huber", huber_delta=1.0)
    huber.update(torch.tensor([[2.0], [0.5]]), torch.tensor([0.0, 0.0]))
    got = huber.snapshot()
    assert got["served_mae"] == pytest.approx(1.25)
    assert got["served_loss"] == pytest.approx((1.5 + 0.125) / 2)  # |e|-1/2 beyond delta


def config() -> TrainerConfig:
    return TrainerConfig(model=ModelSpec(kind="logistic", features=2))


def test_the_learner_scores_served_rows_beside_its_own_and_checkpoints_them(
    tmp_path: Path,
) -> None:
    learner = Learner(config(), "cpu")
    values = [record(i % 2, [0.9 if i % 2 else 0.1]) for i in range(20)]
    values += [record(1, [])]  # learned, not served-scored
    batch, _ = decode(messages(values), "binary", 2)
    learner.learn(batch)
    scores = learner.scores()
    assert scores["events"] == 21 and scores["served_events"] == 20
    assert scores["served_accuracy"] == 1.0 and "accuracy" in scores
    checkpoint.save(tmp_path / "c.pt", {"learner": learner.state()})
    restored = Learner(config(), "cpu")
    saved = checkpoint.load(tmp_path / "c.pt")
    assert saved is not None
    restored.restore(saved["learner"])
    assert restored.scores() == scores
    old = learner.state()
    del old["served"]  # a checkpoint from before served scores: starts them afresh
    Learner(config(), "cpu").restore(old)


def test_joined_and_negative_samples_carry_the_served_score() -> None:
    joined = Joined(pred("a"), fb("a", T0 + 5), 5).sample()
    assert list(joined.served_score) == [0.25]
    negative = Negative(pred("b"), Label.class_index(0), T0 + 60_000).sample()
    assert list(negative.served_score) == [0.25]
    batch, _ = decode(messages([joined.SerializeToString()]), "binary", 2)
    assert batch.served is not None and float(batch.served[0, 0]) == 0.25
