"""The `normalized` optimizer (Vowpal Wabbit's default rule): scale-free, importance-aware,
checkpointed exactly, the same on the torch and the compiled path."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import vowpalwabbit  # a dev dependency (the trainer bench's baseline): the reference here
from pydantic import ValidationError

from services.trainer import checkpoint, normalized
from services.trainer.config import NORMALIZED_LR, ModelSpec, OptimizerSpec, TrainerConfig
from services.trainer.learner import Batch, Learner
from shared.errors import ConfigError
from tests.unit.test_learner_contract import F, stream

KINDS = [
    ("linear", "mse", "regression"),
    ("linear", "huber", "regression"),
    ("logistic", "bce", "binary"),
    ("softmax", "cross_entropy", "multiclass"),
]


def config(kind: str, loss: str, **model: object) -> TrainerConfig:
    return TrainerConfig(
        model=ModelSpec(kind=kind, features=F, classes=3, standardize=False, **model),  # type: ignore[arg-type]
        optimizer=OptimizerSpec(name="normalized"),
        loss=loss,  # type: ignore[arg-type]
        metrics_window=500,
    )


def scaled(data: Batch, factor: float, column: int = 0) -> Batch:
    features = data.features.clone()
    features[:, column] *= factor
    return Batch(features, data.labels.clone(), data.weights, data.sparse, data.named)


def prequential(learner: Learner, data: Batch, every: int = 1) -> np.ndarray:
    """The prediction of each event before it is learned (events learned `every` at a time)."""
    predictions = []
    for start in range(0, len(data), every):
        chunk = data.slice(start, start + every)
        predictions.append(learner.predict(chunk))
        learner.learn(chunk)
    return np.concatenate(predictions)


def test_the_spec_defaults_to_vws_rate_and_refuses_momentum_and_weight_decay() -> None:
    assert OptimizerSpec(name="normalized").lr == NORMALIZED_LR == 0.5
    assert OptimizerSpec(name="normalized", lr=0.1).lr == 0.1
    assert OptimizerSpec().lr == 0.01  # other optimizers keep theirs
    for bad in ({"momentum": 0.9}, {"weight_decay": 1e-3}):
        with pytest.raises(ValidationError, match="no momentum or weight_decay"):
            OptimizerSpec(name="normalized", **bad)  # type: ignore[arg-type]


def test_clipping_and_a_gpu_are_refused_with_config_errors() -> None:
    clipped = config("logistic", "bce").model_copy(update={"clip_norm": 1.0})
    with pytest.raises(ConfigError, match="clip_norm"):
        Learner(clipped)
    network = torch.nn.Linear(2, 1)
    with pytest.raises(ConfigError, match="CPU"):
        normalized.build("linear", network, 0.5, "cuda", None)


@pytest.mark.parametrize(("kind", "loss", "task"), KINDS)
def test_multiplying_a_feature_by_1000_leaves_the_predictions_unchanged(
    kind: str, loss: str, task: str
) -> None:
    data = stream(task, 1500, seed=4)
    plain = prequential(Learner(config(kind, loss)), data)
    thousand = prequential(Learner(config(kind, loss)), scaled(data, 1000.0))
    tiny = prequential(Learner(config(kind, loss)), scaled(data, 1e-3, column=3))
    spread = float(np.abs(plain).max())
    np.testing.assert_allclose(thousand, plain, atol=1e-4 * spread)
    np.testing.assert_allclose(tiny, plain, atol=1e-4 * spread)
    # and it learned: the later predictions are good ones
    late, labels = plain[-500:], data.labels.numpy()[-500:]
    if task == "regression":
        assert float(np.sqrt(np.mean((late.ravel() - labels) ** 2))) < 0.6
    elif task == "binary":
        assert float(np.mean((late.ravel() >= 0.5) == labels)) > 0.8
    else:
        assert float(np.mean(late.argmax(axis=1) == labels)) > 0.75


@pytest.mark.parametrize(("kind", "loss", "task"), KINDS)
def test_plain_sgd_on_the_same_scaled_stream_degrades_or_diverges(
    kind: str, loss: str, task: str
) -> None:
    """The baseline the invariance is against: SGD's rate cannot suit both scales."""
    data = stream(task, 1500, seed=4)
    sgd = TrainerConfig(
        model=ModelSpec(kind=kind, features=F, classes=3, standardize=False),  # type: ignore[arg-type]
        optimizer=OptimizerSpec(lr=0.02),
        loss=loss,  # type: ignore[arg-type]
        metrics_window=500,
    )
    base, big = Learner(sgd), Learner(sgd)
    base.learn(data)
    big.learn(scaled(data, 1000.0))
    ours = Learner(config(kind, loss))
    ours.learn(scaled(data, 1000.0))
    key = "rmse" if task == "regression" else "logloss"
    worst = big.metrics.snapshot()[key]
    assert big.diverging > 0 or not math.isfinite(worst) or worst > 2 * base.metrics.snapshot()[key]
    assert ours.diverging == 0 and ours.metrics.snapshot()[key] < worst / 2


def raw_regression(n: int, seed: int = 0) -> Batch:
    """Raw measurements of very different scales (1e-3 .. 1e6) and a target around 50."""
    rng = np.random.default_rng(seed)
    scales = np.array([1e-3, 1.0, 1e3, 1e6], dtype=np.float64)
    x = rng.normal(1.0, 0.3, size=(n, 4)) * scales
    y = 50.0 + (x / scales) @ np.array([3.0, -2.0, 4.0, 1.0]) + rng.normal(scale=0.5, size=n)
    return Batch(torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.float32)))


@pytest.mark.parametrize("fused_enabled", [True, False])
def test_a_raw_regression_never_diverges_and_learns(fused_enabled: bool) -> None:
    data = raw_regression(4000)
    learner = Learner(
        TrainerConfig(
            model=ModelSpec(kind="linear", features=4, standardize=False),
            optimizer=OptimizerSpec(name="normalized"),
            metrics_window=500,
        ),
        fused_enabled=fused_enabled,
    )
    assert (learner._fused is not None) == fused_enabled
    predictions = prequential(learner, data, every=100)
    assert (learner.applied, learner.skipped, learner.diverging) == (4000, 0, 0)
    assert np.isfinite(predictions).all()
    errors = np.abs(predictions.ravel() - data.labels.numpy())
    assert errors.max() < 100.0  # the first prediction is 0 against a label near 50
    # it keeps learning (AdaGrad-style rates on uncentred features: slowly, but surely)
    means = [float(errors[i : i + 500].mean()) for i in range(0, 4000, 500)]
    assert means[-1] < means[0] / 8 and means[-1] < means[len(means) // 2]
    # the same stream with plain SGD blows up (finite or not), which the guard must catch
    sgd = Learner(
        TrainerConfig(
            model=ModelSpec(kind="linear", features=4, standardize=False),
            optimizer=OptimizerSpec(lr=1e-5),
            divergence_ratio=None,
        )
    )
    sgd.learn(data)
    weights = torch.cat([p.detach().flatten() for p in sgd.network.parameters()])
    assert not torch.isfinite(weights).all() or float(weights.abs().max()) > 1e6


def test_an_event_whose_update_would_overflow_is_refused_and_changes_nothing() -> None:
    data = stream("regression", 300)
    data.features[200, 2] = 1e30  # x^2 overflows float32: the sums would be infinite
    learner = Learner(config("linear", "mse"), fused_enabled=False)
    learner.learn(data.slice(0, 200))
    before = [t.clone() for t in learner.network.parameters()]
    state = {k: v.clone() for s in learner.optimizer.state.values() for k, v in s.items()}
    norm = learner.optimizer.param_groups[0]["norm_sum"]
    learner.learn(data.slice(200, 201))
    assert (learner.applied, learner.skipped) == (200, 1)
    for a, b in zip(before, learner.network.parameters(), strict=True):
        assert torch.equal(a, b)
    after = {k: v for s in learner.optimizer.state.values() for k, v in s.items()}
    assert all(torch.equal(state[k], after[k]) for k in state)
    assert learner.optimizer.param_groups[0]["norm_sum"] == norm
    learner.learn(data.slice(201, 300))
    assert learner.applied == 299 and all(torch.isfinite(p).all() for p in before)


@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_a_heavy_importance_weight_never_overshoots_the_label(loss: str) -> None:
    """Importance-aware: weight 1e6 moves the prediction towards the label, never past it."""
    kind = "linear" if loss == "mse" else "logistic"
    data = stream("regression" if loss == "mse" else "binary", 200, seed=2)
    learner = Learner(config(kind, loss))
    learner.learn(data.slice(0, 199))
    last = data.slice(199, 200)
    label = float(last.labels[0])
    before = float(learner.predict(last)[0, 0])
    heavy = Batch(last.features, last.labels, weights=torch.tensor([1e6]))
    learner.learn(heavy)
    after = float(learner.predict(last)[0, 0])
    assert math.isfinite(after)
    assert abs(after - label) < abs(before - label)  # moved towards the label
    # not past it (beyond float32 rounding of the weights)
    assert (after - label) * (before - label) >= 0 or abs(after - label) < 1e-5
    assert abs(after - label) < 0.05  # and nearly all the way, as a weight of 1e6 asks


def test_lambert_w_of_exp_solves_its_equation_over_a_wide_range() -> None:
    for x in [-700.0, -30.0, -1.0, 0.0, 0.5, 1.0, 2.0, 30.0, 1e3, 1e12]:
        u = normalized._w_of_exp(x)
        assert u > 0 and u + math.log(u) == pytest.approx(x, rel=1e-12, abs=1e-12)


def test_a_larger_scale_rescales_the_weight_as_if_it_had_been_there() -> None:
    """VW's rescale: after a value 10x the running max, the feature's weight shrinks 10x
    before the update, so the prediction of the old values is what it was."""
    learner = Learner(config("linear", "mse"), fused_enabled=False)
    data = stream("regression", 400)
    learner.learn(data.slice(0, 300))
    scale = learner.optimizer.state[learner.network.body.weight]["scale"].clone()
    column = 1
    big = data.slice(300, 301)
    big.features[0, column] = float(10 * scale[column])
    weight = float(learner.network.body.weight[0, column].detach())
    zeroed = big.features.clone()
    zeroed[0, :] = 0.0
    zeroed[0, column] = big.features[0, column]
    lone = Batch(zeroed, big.labels.clone(), weights=torch.tensor([1e-30]))  # no real step
    learner.learn(lone)
    assert float(learner.optimizer.state[learner.network.body.weight]["scale"][column]) == (
        pytest.approx(10 * float(scale[column]))
    )
    assert float(learner.network.body.weight[0, column].detach()) == pytest.approx(
        weight / 10, rel=1e-4
    )


@pytest.mark.parametrize("fused_enabled", [True, False])
@pytest.mark.parametrize(("kind", "loss", "task"), KINDS)
def test_checkpoints_continue_bit_for_bit(
    kind: str, loss: str, task: str, fused_enabled: bool, tmp_path: Path
) -> None:
    cfg = config(kind, loss).model_copy(
        update={"optimizer": OptimizerSpec(name="normalized", schedule="inv_sqrt")}
    )
    data = scaled(stream(task, 900, seed=3), 250.0)
    straight = Learner(cfg, fused_enabled=fused_enabled)
    straight.learn(data)
    first = Learner(cfg, fused_enabled=fused_enabled)
    first.learn(data.slice(0, 517))
    path = tmp_path / "c.ckpt"
    checkpoint.save(path, {"learner": first.state()})  # the weights-only unpickler loads it
    payload = checkpoint.load(path)
    assert payload is not None
    second = Learner(cfg, fused_enabled=fused_enabled)
    second.restore(payload["learner"])
    second.learn(data.slice(517, 900))
    for a, b in zip(straight.network.parameters(), second.network.parameters(), strict=True):
        assert torch.equal(a, b)
    ours, theirs = straight.optimizer.state_dict(), second.optimizer.state_dict()
    assert ours["param_groups"] == theirs["param_groups"]  # lr, schedule and normaliser
    assert ours["param_groups"][0]["norm_sum"] > 0
    assert ours["state"].keys() == theirs["state"].keys()
    for index, state in ours["state"].items():
        assert state.keys() == theirs["state"][index].keys()
        for key, value in state.items():
            assert torch.equal(value, theirs["state"][index][key]), key
    assert second.metrics.snapshot() == straight.metrics.snapshot()


@pytest.mark.parametrize(("kind", "loss", "task"), KINDS[:3])
@pytest.mark.parametrize("standardize", [False, True])
def test_the_compiled_and_torch_paths_agree(
    kind: str, loss: str, task: str, standardize: bool
) -> None:
    cfg = config(kind, loss).model_copy(
        update={"model": ModelSpec(kind=kind, features=F, standardize=standardize)}  # type: ignore[arg-type]
    )
    data = scaled(stream(task, 1500), 300.0)
    data.features[10, 1] = float("nan")
    data.named = True
    data.weights = torch.from_numpy(
        np.random.default_rng(1).uniform(0.2, 3.0, 1500).astype(np.float32)
    )
    fused, plain = Learner(cfg), Learner(cfg, fused_enabled=False)
    assert fused._fused is not None and plain._fused is None
    fused.learn(data)
    plain.learn(data)
    assert (fused.applied, fused.skipped) == (plain.applied, plain.skipped) == (1500, 0)
    _assert_close(fused, plain)


def test_hashed_ids_take_the_compiled_path_and_agree_with_torch() -> None:
    cfg = config("logistic", "bce", sparse_buckets=50)
    data = scaled(stream("binary", 1500, sparse=True), 100.0)
    data.sparse[::3, 1] = data.sparse[::3, 0]  # type: ignore[index]  # an id in two slots
    data.sparse[::5, 2] = 0  # type: ignore[index]  # missing
    data.named = True
    fused, plain = Learner(cfg), Learner(cfg, fused_enabled=False)
    assert fused._fused is not None
    fused.learn(data)
    plain.learn(data)
    _assert_close(fused, plain)
    assert fused.metrics.snapshot()["accuracy"] > 0.8
    # a bucket's scale: the most slots one event gave its id (id 0 is no feature)
    expected = np.zeros(50, dtype=np.float32)
    for row in data.sparse.numpy():  # type: ignore[union-attr]
        ids, counts = np.unique(row[row != 0], return_counts=True)
        expected[ids] = np.maximum(expected[ids], counts)
    for learner in (fused, plain):
        table = learner.network.body.embedding.weight
        np.testing.assert_array_equal(learner.optimizer.state[table]["scale"].numpy(), expected)
    assert expected.max() >= 2


def _assert_close(fused: Learner, plain: Learner) -> None:
    for a, b in zip(fused.network.parameters(), plain.network.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=2e-4, atol=2e-5)
    for a, b in zip(fused.network.buffers(), plain.network.buffers(), strict=True):
        assert torch.equal(a, b)
    ours, theirs = fused.optimizer.state_dict(), plain.optimizer.state_dict()
    for index, state in ours["state"].items():
        for key, value in state.items():
            torch.testing.assert_close(value, theirs["state"][index][key], rtol=2e-4, atol=2e-5)
    for key in ("norm_sum", "weight_sum", "lr"):
        assert ours["param_groups"][0][key] == pytest.approx(theirs["param_groups"][0][key])
    assert fused.scheduler.last_epoch == plain.scheduler.last_epoch


@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_predictions_match_vowpal_wabbits_own_learner(loss: str) -> None:
    """The same raw stream (scales 1e-2 .. 1e3, importance weights 0.5 .. 50) through VW's
    default learner: every prequential score agrees, to VW's float32 approximations."""
    rng = np.random.default_rng(0)
    n = 1500
    scales = np.array([1e-2, 1.0, 30.0, 1e3], dtype=np.float32)
    x = (rng.normal(size=(n, 4)) * scales).astype(np.float32)
    weights = rng.uniform(0.5, 50.0, n).astype(np.float32)
    score = (x / scales) @ np.array([1.0, -2.0, 0.5, 1.5])
    if loss == "bce":
        y = (rng.random(n) < 1 / (1 + np.exp(-score))).astype(np.float32)
        vw = vowpalwabbit.Workspace("--quiet --loss_function logistic")
    else:
        y = (score + 3.0 + rng.normal(scale=0.1, size=n)).astype(np.float32)
        # VW clips squared-loss predictions to the labels' range: opened wide, as ours
        vw = vowpalwabbit.Workspace("--quiet --min_prediction -1e9 --max_prediction 1e9")
    kind = "linear" if loss == "mse" else "logistic"
    learner = Learner(
        TrainerConfig(
            model=ModelSpec(kind=kind, features=4, standardize=False),
            optimizer=OptimizerSpec(name="normalized"),
        )
    )
    ours, theirs = [], []
    try:
        for i in range(n):
            event = Batch(
                torch.from_numpy(x[i : i + 1]),
                torch.from_numpy(y[i : i + 1]),
                weights=torch.from_numpy(weights[i : i + 1]),
            )
            with torch.no_grad():
                ours.append(float(learner.network(event.features)[0, 0]))
            learner.learn(event)
            features = " ".join(f"f{j}:{float(x[i, j])!r}" for j in range(4))
            label = float(y[i]) if loss == "mse" else (1 if y[i] else -1)
            theirs.append(vw.predict(f"| {features}"))
            vw.learn(f"{label} {float(weights[i])!r} | {features}")
    finally:
        vw.finish()
    assert learner.applied == n
    gap = np.abs(np.array(ours) - np.array(theirs))
    assert float(np.abs(theirs).mean()) > 1.0  # it learned something to agree on
    assert float(gap.max()) < 2e-3 and float(gap.mean()) < 1e-4
