"""The learner's guards: divergence (finite blow-ups), drift detection, new categories,
and the input layer's statistics (missing values, learning only)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from services.trainer.config import ModelSpec, OptimizerSpec, TrainerConfig
from services.trainer.learner import Batch, Learner
from tests.unit.test_learner_contract import F, stream


def raw_regression(n: int, seed: int = 0) -> Batch:
    """Features around 1e3, as raw measurements are: SGD at lr 1e-5 overshoots on them."""
    rng = np.random.default_rng(seed)
    x = rng.normal(1000.0, 100.0, size=(n, 4)).astype(np.float32)
    y = (x @ np.array([0.01, -0.02, 0.03, 0.01]) + rng.normal(scale=0.5, size=n)).astype(np.float32)
    return Batch(torch.from_numpy(x), torch.from_numpy(y))


def raw_config(ratio: float | None) -> TrainerConfig:
    return TrainerConfig(
        model=ModelSpec(kind="linear", features=4, standardize=False),
        optimizer=OptimizerSpec(lr=1e-5),
        divergence_ratio=ratio,
    )


@pytest.mark.parametrize("fused_enabled", [True, False])
def test_a_diverging_raw_regression_is_caught_and_its_weights_stay_bounded(
    fused_enabled: bool,
) -> None:
    data = raw_regression(2000)
    unguarded = Learner(raw_config(None), fused_enabled=fused_enabled)
    unguarded.learn(data)
    weights = torch.cat([p.detach().flatten() for p in unguarded.network.parameters()])
    blown = not torch.isfinite(weights).all() or float(weights.abs().max()) > 1e6
    assert blown and unguarded.diverging == 0  # it diverges without the guard
    guarded = Learner(raw_config(1e3), fused_enabled=fused_enabled)
    guarded.learn(data)
    assert guarded.diverging > 1000  # caught, counted apart from unusable events
    assert guarded.applied + guarded.skipped + guarded.diverging == 2000
    weights = torch.cat([p.detach().flatten() for p in guarded.network.parameters()])
    assert torch.isfinite(weights).all() and float(weights.abs().max()) < 10.0
    assert guarded.metrics.snapshot()["mae"] < 1e3


@pytest.mark.parametrize(
    ("kind", "task", "optimizer"),
    [
        ("linear", "regression", OptimizerSpec()),
        ("linear", "regression", OptimizerSpec(name="adam", lr=0.05)),
        ("logistic", "binary", OptimizerSpec(lr=0.5)),
        ("softmax", "multiclass", OptimizerSpec(name="adagrad", lr=0.5)),
        ("mlp", "regression", OptimizerSpec(name="adam", lr=0.01)),
    ],
)
def test_ordinary_noisy_learning_is_never_refused(
    kind: str, task: str, optimizer: OptimizerSpec
) -> None:
    data = stream(task, 3000, seed=5)
    if task == "regression":  # heavy-ish noise: a few 6-sigma outliers among the labels
        rng = np.random.default_rng(1)
        data.labels[rng.choice(3000, 30, replace=False)] += torch.from_numpy(
            rng.choice([-6.0, 6.0], 30).astype(np.float32)
        )
    spec = ModelSpec(kind=kind, features=F, classes=3, hidden=(8,) if kind == "mlp" else ())  # type: ignore[arg-type]
    learner = Learner(TrainerConfig(model=spec, optimizer=optimizer))
    learner.learn(data)
    assert (learner.applied, learner.skipped, learner.diverging) == (3000, 0, 0)


def drifting(n: int, at: int, seed: int = 0) -> Batch:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, F)).astype(np.float32)
    w = np.linspace(-1.0, 1.0, F)
    sign = np.where(np.arange(n) < at, 1.0, -1.0)
    y = (sign * (x @ w) + rng.normal(scale=0.1, size=n)).astype(np.float32)
    return Batch(torch.from_numpy(x), torch.from_numpy(y))


@pytest.mark.parametrize("detector", ["adwin", "page_hinkley"])
def test_a_concept_drift_is_detected_where_it_happens(detector: str) -> None:
    config = TrainerConfig(
        model=ModelSpec(kind="linear", features=F),
        optimizer=OptimizerSpec(lr=0.01, schedule="inv_sqrt", schedule_scale=100),
        drift=detector,  # type: ignore[arg-type]
        drift_rewarm=True,
    )
    learner = Learner(config)
    data = drifting(6000, at=3000)
    learner.learn(data.slice(0, 3000))
    before, first = learner.drifts, 0
    for start in range(3000, 6000, 100):
        learner.learn(data.slice(start, start + 100))
        if learner.drifts > before and not first:
            first = learner.last_drift_event  # the first detection after the change
    assert 3000 < first < 3600
    # rewarmed: the schedule restarted at the batch after the detection
    assert learner.scheduler.last_epoch < 3000
    off = Learner(config.model_copy(update={"drift": "off"}))
    off.learn(data)
    assert (off.drifts, off.last_drift_event) == (0, 0)
    assert off.scheduler.last_epoch == 6000


def test_new_categories_count_buckets_never_seen_before() -> None:
    config = TrainerConfig(model=ModelSpec(kind="logistic", features=2, sparse_buckets=32))
    learner = Learner(config)
    x, y = torch.zeros(3, 2), torch.ones(3)
    learner.learn(Batch(x, y, sparse=torch.tensor([[1, 2], [2, 0], [1, 5]]), named=True))
    assert learner.new_categories == 3  # buckets 1, 2, 5; 0 is missing
    learner.learn(Batch(x, y, sparse=torch.tensor([[5, 2], [1, 1], [7, 0]]), named=True))
    assert learner.new_categories == 4
    refused = Batch(x, torch.full((3,), float("nan")), sparse=torch.tensor([[9, 9]] * 3))
    learner.learn(refused)  # unusable rows show no category
    assert learner.new_categories == 4 and learner.skipped == 3
    out_of_range = Batch(x[:1], y[:1], sparse=torch.tensor([[40, 1]]), named=True)
    learner.learn(out_of_range)
    assert learner.skipped == 4


@pytest.mark.parametrize("fused_enabled", [True, False])
def test_missing_values_are_imputed_when_named_and_refused_when_positional(
    fused_enabled: bool,
) -> None:
    data = stream("regression", 400)
    data.features[::7, 1] = float("nan")
    config = TrainerConfig(model=ModelSpec(kind="linear", features=F))
    positional = Learner(config, fused_enabled=fused_enabled)
    positional.learn(data)
    assert positional.skipped == len(range(0, 400, 7))
    named = Learner(config, fused_enabled=fused_enabled)
    named.learn(Batch(data.features, data.labels, named=True))
    assert (named.applied, named.skipped) == (400, 0)
    scaler = named.network.scaler
    assert int(scaler.count[1]) == 400 - len(range(0, 400, 7)) and int(scaler.count[0]) == 400
    inf = Batch(torch.full((1, F), float("inf")), torch.zeros(1), named=True)
    named.learn(inf)
    assert named.skipped == 1  # infinity is never a missing value


def test_predicting_moves_no_statistics_and_a_missing_value_is_the_mean() -> None:
    learner = Learner(TrainerConfig(model=ModelSpec(kind="linear", features=F)))
    data = stream("regression", 300)
    learner.learn(data)
    before = {k: v.clone() for k, v in learner.network.state_dict().items()}
    learner.predict(stream("regression", 50, seed=3))
    for key, value in learner.network.state_dict().items():
        assert torch.equal(value, before[key]), key
    scaler = learner.network.scaler
    at_mean = scaler.mean.to(torch.float32).unsqueeze(0)
    missing = torch.full((1, F), float("nan"))
    np.testing.assert_allclose(
        learner.predict(Batch(missing, torch.zeros(1), named=True)),
        learner.predict(Batch(at_mean, torch.zeros(1), named=True)),
        atol=1e-6,
    )
    constant = Learner(TrainerConfig(model=ModelSpec(kind="linear", features=F)))
    same = torch.ones(20, F)
    constant.learn(Batch(same, torch.ones(20)))
    assert torch.equal(constant.network.scaler(same), torch.zeros(20, F))  # no variance: 0


def test_without_standardisation_the_input_layer_only_imputes() -> None:
    config = TrainerConfig(model=ModelSpec(kind="linear", features=F, standardize=False))
    learner = Learner(config)
    assert not list(learner.network.buffers())
    x = torch.tensor([[1.0, float("nan"), 3.0, -4.0, 5.0, 6.0]])
    assert torch.equal(learner.network.scaler(x), torch.nan_to_num(x, nan=0.0))
