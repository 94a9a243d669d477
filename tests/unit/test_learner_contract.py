"""The contract every model/optimizer/loss combination must meet: it learns what it should,
test-then-train metrics tell the truth, and non-finite events never poison it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from services.trainer.config import ModelSpec, OptimizerSpec, TrainerConfig
from services.trainer.learner import Batch, Learner

F = 6
RATES = {"sgd": 0.02, "momentum": 0.003, "adam": 0.01, "rmsprop": 0.005, "adagrad": 0.2}


def optimizer(name: str, **kw: object) -> OptimizerSpec:
    if name == "momentum":
        return OptimizerSpec(name="sgd", lr=RATES[name], momentum=0.9, **kw)  # type: ignore[arg-type]
    return OptimizerSpec(name=name, lr=RATES[name], **kw)  # type: ignore[arg-type]


def stream(task: str, n: int, seed: int = 0, sparse: bool = False) -> Batch:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, F)).astype(np.float32)
    w = np.linspace(-1.5, 1.5, F).astype(np.float32)
    ids = rng.integers(1, 50, size=(n, 3))
    score = x @ w + (np.where(ids[:, 0] < 25, 1.5, -1.5) if sparse else 0)
    if task == "regression":
        y = (score + 0.3 + rng.normal(scale=0.1, size=n)).astype(np.float32)
    elif task == "binary":
        y = (rng.random(n) < 1 / (1 + np.exp(-2 * score))).astype(np.float32)
    else:
        y = np.digitize(score, [-1.0, 1.0]).astype(np.int64)
    return Batch(
        torch.from_numpy(x), torch.from_numpy(y), sparse=torch.from_numpy(ids) if sparse else None
    )


def learn(config: TrainerConfig, task: str, n: int = 3000, **kw: object) -> Learner:
    learner = Learner(config)
    learner.learn(stream(task, n, **kw))  # type: ignore[arg-type]
    return learner


OPTIMIZERS = list(RATES)
CASES = [
    ("linear", "mse", "regression"),
    ("linear", "huber", "regression"),
    ("mlp", "mse", "regression"),
    ("logistic", "bce", "binary"),
    ("mlp", "bce", "binary"),
    ("softmax", "cross_entropy", "multiclass"),
    ("mlp", "cross_entropy", "multiclass"),
]


@pytest.mark.parametrize("optimizer_name", OPTIMIZERS)
@pytest.mark.parametrize(("kind", "loss", "task"), CASES)
def test_every_combination_learns_its_task(
    kind: str, loss: str, task: str, optimizer_name: str
) -> None:
    spec = ModelSpec(kind=kind, features=F, hidden=(16,) if kind == "mlp" else (), classes=3)  # type: ignore[arg-type]
    config = TrainerConfig(
        model=spec,
        optimizer=optimizer(optimizer_name),
        loss=loss,  # type: ignore[arg-type]
        metrics_window=500,
    )
    learner = learn(config, task)
    final = learner.metrics.snapshot()
    if task == "regression":
        assert final["rmse"] < 0.6, final
    else:
        assert final["accuracy"] > (0.8 if task == "binary" else 0.75), final
    assert learner.applied == 3000 and learner.skipped == 0


def test_prequential_metrics_improve_as_the_model_learns() -> None:
    config = TrainerConfig(model=ModelSpec(kind="logistic", features=F), metrics_window=200)
    learner = Learner(config)
    data = stream("binary", 4000)
    learner.learn(data.slice(0, 200))
    early = learner.metrics.snapshot()
    learner.learn(data.slice(200, 4000))
    late = learner.metrics.snapshot()
    assert late["logloss"] < early["logloss"] - 0.1
    assert late["auc"] > 0.9 and late["events"] == 4000


def test_hashed_sparse_features_are_learned_through_the_embedding_bag() -> None:
    spec = ModelSpec(kind="embedding_bag", features=F, sparse_buckets=50, embedding_dim=4)
    dense_only = learn(
        TrainerConfig(model=ModelSpec(kind="logistic", features=F), optimizer=optimizer("adam")),
        "binary",
        sparse=True,
    )
    with_bag = learn(TrainerConfig(model=spec, optimizer=optimizer("adam")), "binary", sparse=True)
    assert with_bag.metrics.snapshot()["accuracy"] > dense_only.metrics.snapshot()["accuracy"]


def test_mini_batches_learn_too_with_one_step_per_batch() -> None:
    config = TrainerConfig(
        model=ModelSpec(kind="logistic", features=F),
        batch_size=32,
        optimizer=OptimizerSpec(name="adam", lr=0.05),
    )
    learner = learn(config, "binary", n=6400)
    assert learner.metrics.snapshot()["accuracy"] > 0.8
    assert learner.scheduler.last_epoch == 200  # 6400 / 32 steps


@pytest.mark.parametrize("batch_size", [1, 16])
def test_non_finite_events_are_skipped_counted_and_harmless(batch_size: int) -> None:
    data = stream("regression", 2000)
    poisoned = [7, 100, 101, 555, 1999]
    data.features[7, 2] = float("nan")
    data.features[100, 0] = float("inf")
    data.labels[101] = float("nan")
    data.labels[555] = float("-inf")
    data.features[1999] = 1e30  # overflows the loss: refused by the loss/gradient check
    config = TrainerConfig(
        model=ModelSpec(kind="linear", features=F),
        batch_size=batch_size,
        optimizer=OptimizerSpec(lr=0.02),
    )
    learner = Learner(config)
    learner.learn(data)
    assert learner.skipped >= len(poisoned) - (0 if batch_size == 1 else 1)
    assert learner.applied + learner.skipped == 2000
    assert all(torch.isfinite(p).all() for p in learner.network.parameters())
    assert learner.metrics.snapshot()["rmse"] < 0.6


def test_inverse_sqrt_schedule_decays_the_learning_rate() -> None:
    config = TrainerConfig(
        model=ModelSpec(kind="linear", features=F),
        optimizer=OptimizerSpec(lr=0.1, schedule="inv_sqrt"),
    )
    learner = learn(config, "regression", n=99)
    assert learner.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 / np.sqrt(100))


def test_the_classic_mlp_is_a_two_line_config() -> None:
    text = "model: {kind: mlp, features: 6, hidden: [10]}\noptimizer: {name: sgd, lr: 0.01}\n"
    config = TrainerConfig.model_validate(yaml.safe_load(text))
    layers = [type(m).__name__ for m in Learner(config).network]
    assert layers == ["Linear", "ReLU", "Linear"]
    assert (config.resolved_loss, config.outputs, config.optimizer.lr) == ("mse", 1, 0.01)


def test_any_module_by_dotted_path() -> None:
    spec = ModelSpec(
        kind="module", module="torch.nn.Linear", module_kwargs={"in_features": F, "out_features": 1}
    )
    learner = learn(TrainerConfig(model=spec, optimizer=optimizer("adam")), "regression")
    assert learner.metrics.snapshot()["rmse"] < 0.6


def test_same_config_and_data_give_bit_identical_parameters() -> None:
    config = TrainerConfig(
        model=ModelSpec(kind="mlp", features=F, hidden=(8,)), optimizer=optimizer("adam")
    )
    a, b = learn(config, "regression", n=500), learn(config, "regression", n=500)
    for pa, pb in zip(a.network.parameters(), b.network.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_restoring_state_continues_exactly_like_an_uninterrupted_run() -> None:
    config = TrainerConfig(
        model=ModelSpec(kind="mlp", features=F, hidden=(8,)),
        optimizer=optimizer("adam", schedule="inv_sqrt"),
    )
    data = stream("regression", 1000)
    straight = Learner(config)
    straight.learn(data)
    first = Learner(config)
    first.learn(data.slice(0, 437))
    second = Learner(config)
    second.restore(first.state())
    second.learn(data.slice(437, 1000))
    for pa, pb in zip(straight.network.parameters(), second.network.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert second.metrics.snapshot() == straight.metrics.snapshot()
