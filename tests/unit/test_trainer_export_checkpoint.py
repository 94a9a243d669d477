"""ONNX versions by initializer rewriting, and atomic checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from services.trainer import checkpoint
from services.trainer.config import ModelSpec, OptimizerSpec, TrainerConfig
from services.trainer.export import OnnxExporter
from services.trainer.learner import Learner
from shared.errors import IntegrityError
from shared.onnx_models import INPUT, OUTPUT
from shared.ort import make_session
from tests.unit.test_learner_contract import F, stream

CONFIGS = [
    TrainerConfig(model=ModelSpec(kind="logistic", features=F)),
    TrainerConfig(model=ModelSpec(kind="mlp", features=F, hidden=(10,))),
    TrainerConfig(model=ModelSpec(kind="softmax", features=F, classes=3)),
    TrainerConfig(model=ModelSpec(kind="embedding_bag", features=F, sparse_buckets=50)),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.model.kind)
def test_each_version_rewrites_weights_and_matches_torch(config: TrainerConfig) -> None:
    task = {"binary": "binary", "regression": "regression", "multiclass": "multiclass"}[config.task]
    sparse = config.model.kind == "embedding_bag"
    data = stream(task, 400, sparse=sparse)
    learner = Learner(config)
    exporter = OnnxExporter(learner, data.slice(0, 16))
    first = exporter.export()
    learner.learn(data)
    second = exporter.export()
    assert first != second
    feeds = {INPUT: data.features[:5].numpy()}
    if sparse:
        feeds["sparse"] = data.sparse[:5].numpy()  # type: ignore[index]
    served = make_session(second, "cpu").run([OUTPUT], feeds)[0]
    np.testing.assert_allclose(served, learner.predict(data.slice(0, 5)), atol=1e-5)


def test_a_version_that_disagrees_with_torch_is_refused() -> None:
    learner = Learner(TrainerConfig(model=ModelSpec(kind="logistic", features=F)))
    exporter = OnnxExporter(learner, stream("binary", 8))
    exporter._serving = lambda *inputs: torch.zeros(8, 1) + 0.123  # type: ignore[assignment]
    with pytest.raises(IntegrityError, match="differs from torch"):
        exporter.export()


def test_checkpoints_round_trip_and_replace_atomically(tmp_path: Path) -> None:
    config = TrainerConfig(
        model=ModelSpec(kind="linear", features=F), optimizer=OptimizerSpec(name="adam", lr=0.01)
    )
    learner = Learner(config)
    learner.learn(stream("regression", 300))
    path = tmp_path / "trainer.ckpt"
    assert checkpoint.load(path) is None
    checkpoint.save(path, {"learner": learner.state(), "offsets": {"t:0": 300}})
    checkpoint.save(path, {"learner": learner.state(), "offsets": {"t:0": 300}})
    restored = Learner(config)
    payload = checkpoint.load(path)
    assert payload is not None and payload["offsets"] == {"t:0": 300}
    restored.restore(payload["learner"])
    for a, b in zip(learner.network.parameters(), restored.network.parameters(), strict=True):
        assert torch.equal(a, b)
    assert [p.name for p in tmp_path.iterdir()] == ["trainer.ckpt"]  # no temp file left
