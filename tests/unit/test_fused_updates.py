"""The compiled per-event path must do what the torch path does, state included."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from services.trainer.config import ModelSpec, OptimizerSpec, TrainerConfig
from services.trainer.learner import Learner
from tests.unit.test_learner_contract import F, stream

OPTIMIZERS = [
    OptimizerSpec(name="sgd", lr=0.01),
    OptimizerSpec(name="sgd", lr=0.003, momentum=0.9, weight_decay=1e-3),
    OptimizerSpec(name="adam", lr=0.01, schedule="inv_sqrt", schedule_scale=100),
    OptimizerSpec(name="rmsprop", lr=0.003, momentum=0.5),
    OptimizerSpec(name="adagrad", lr=0.1, schedule="exponential", gamma=0.99, schedule_scale=50),
]
CASES = [
    ("linear", "mse", "regression"),
    ("linear", "huber", "regression"),
    ("logistic", "bce", "binary"),
]


def pair(config: TrainerConfig) -> tuple[Learner, Learner]:
    fused, plain = Learner(config), Learner(config, fused_enabled=False)
    assert fused._fused is not None and plain._fused is None
    return fused, plain


def assert_same_state(fused: Learner, plain: Learner) -> None:
    for a, b in zip(fused.network.parameters(), plain.network.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=2e-4, atol=2e-5)
    for a, b in zip(fused.network.buffers(), plain.network.buffers(), strict=True):
        assert torch.equal(a, b)  # the running statistics: the same float64 arithmetic


# (standardize, named): raw positional features (NaN refused) or named ones (NaN imputed)
INPUTS = [(True, False), (True, True), (False, False), (False, True)]


@pytest.mark.parametrize(("standardize", "named"), INPUTS)
@pytest.mark.parametrize("opt", OPTIMIZERS, ids=lambda o: f"{o.name}-{o.momentum}-{o.schedule}")
@pytest.mark.parametrize(("kind", "loss", "task"), CASES)
def test_fused_and_torch_paths_agree(
    kind: str, loss: str, task: str, opt: OptimizerSpec, standardize: bool, named: bool
) -> None:
    config = TrainerConfig(
        model=ModelSpec(kind=kind, features=F, standardize=standardize),
        optimizer=opt,
        loss=loss,  # type: ignore[arg-type]
        clip_norm=5.0,
    )
    data = stream(task, 1500)
    data.features[10, 1] = float("nan")
    data.features[30:60, 2] = float("nan")
    data.labels[20] = float("inf")
    data.named = named
    fused, plain = pair(config)
    fused.learn(data)
    plain.learn(data)
    expected = (1499, 1) if named else (1468, 32)
    assert (fused.applied, fused.skipped) == (plain.applied, plain.skipped) == expected
    assert fused.diverging == plain.diverging == 0
    assert_same_state(fused, plain)
    assert fused.optimizer.param_groups[0]["lr"] == pytest.approx(
        plain.optimizer.param_groups[0]["lr"]
    )
    assert fused.scheduler.last_epoch == plain.scheduler.last_epoch
    fs, ps = fused.metrics.snapshot(), plain.metrics.snapshot()
    assert fs.keys() == ps.keys()
    for key in fs:
        assert fs[key] == pytest.approx(ps[key], rel=1e-3, abs=1e-4)


def test_state_from_the_fused_path_continues_on_the_torch_path() -> None:
    config = TrainerConfig(
        model=ModelSpec(kind="logistic", features=F), optimizer=OptimizerSpec(name="adam", lr=0.01)
    )
    data = stream("binary", 1000)
    fused, plain = pair(config)
    fused.learn(data.slice(0, 500))
    plain.learn(data.slice(0, 500))
    resumed = Learner(config, fused_enabled=False)
    resumed.restore(fused.state())
    resumed.learn(data.slice(500, 1000))
    plain.learn(data.slice(500, 1000))
    for a, b in zip(resumed.network.parameters(), plain.network.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=2e-4, atol=2e-5)
    keys = {k for s in resumed.optimizer.state.values() for k in s}
    assert keys == {"step", "exp_avg", "exp_avg_sq"}
    assert np.isfinite(resumed.metrics.snapshot()["logloss"])


def test_hashed_ids_with_plain_sgd_take_the_compiled_path_and_agree_with_torch() -> None:
    config = TrainerConfig(
        model=ModelSpec(kind="logistic", features=F, sparse_buckets=50),
        optimizer=OptimizerSpec(name="sgd", lr=0.05, schedule="inv_sqrt", schedule_scale=100),
    )
    data = stream("binary", 1500, sparse=True)
    data.sparse[::3, 1] = data.sparse[::3, 0]  # type: ignore[index]  # an id in two slots
    data.sparse[::5, 2] = 0  # type: ignore[index]  # missing
    data.features[40:50, 0] = float("nan")
    data.named = True
    fused, plain = pair(config)
    fused.learn(data)
    plain.learn(data)
    assert (fused.applied, fused.skipped) == (plain.applied, plain.skipped) == (1500, 0)
    assert fused.new_categories == plain.new_categories == 49
    assert_same_state(fused, plain)
    fs, ps = fused.metrics.snapshot(), plain.metrics.snapshot()
    for key in fs:
        assert fs[key] == pytest.approx(ps[key], rel=1e-3, abs=1e-4)


@pytest.mark.parametrize(
    "config",
    [
        TrainerConfig(
            model=ModelSpec(kind="logistic", features=F, sparse_buckets=50),
            optimizer=OptimizerSpec(name="adam"),
        ),
        TrainerConfig(
            model=ModelSpec(kind="logistic", features=F, sparse_buckets=50), clip_norm=1.0
        ),
    ],
)
def test_hashed_ids_with_other_optimizers_take_the_torch_path(config: TrainerConfig) -> None:
    assert Learner(config)._fused is None


def test_the_guard_refuses_the_same_events_on_both_paths() -> None:
    from tests.unit.test_learner_guards import raw_config, raw_regression

    fused, plain = pair(raw_config(1e3))
    data = raw_regression(600)
    fused.learn(data)
    plain.learn(data)
    assert (fused.applied, fused.diverging) == (plain.applied, plain.diverging)
    assert fused.diverging > 0
    np.testing.assert_allclose(fused.guard.values, plain.guard.values, rtol=1e-5)


@pytest.mark.parametrize("compiled", [True, False])
def test_the_scored_prediction_uses_the_statistics_from_before_the_event(
    compiled: bool,
) -> None:
    # River's pipelines predict with the scaler as it was before the event, then learn it
    config = TrainerConfig(model=ModelSpec(kind="linear", features=F), metrics_window=10)
    learner = Learner(config, fused_enabled=compiled)
    assert (learner._fused is not None) == compiled
    data = stream("regression", 60)
    learner.learn(data.slice(0, 50))
    for i in range(50, 55):
        event = data.slice(i, i + 1)
        before = learner.predict(event)[0, 0]  # moves nothing
        count = learner.network.scaler.count.clone()
        learner.learn(event)
        scored = learner.metrics._score[i % config.metrics_window]
        assert scored == pytest.approx(float(before), rel=1e-6, abs=1e-7)
        assert torch.equal(learner.network.scaler.count, count + 1)  # and then learned it
