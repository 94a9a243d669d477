"""The contract every model/optimizer/loss combination must meet: it learns what it should,
test-then-train metrics tell the truth, and non-finite events never poison it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from services.trainer import checkpoint
from services.trainer.config import ModelSpec, OptimizerSpec, TrainerConfig
from services.trainer.export import OnnxExporter
from services.trainer.learner import Batch, Learner
from shared.errors import ConfigError
from shared.features import FeatureSpace, Featurizer
from shared.onnx_models import INPUT, OUTPUT
from shared.ort import make_session

F = 6
RATES = {
    "sgd": 0.02,
    "momentum": 0.003,
    "adam": 0.01,
    "rmsprop": 0.005,
    "adagrad": 0.2,
    "normalized": 0.5,
}


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
# `normalized` (VW's rule) updates linear models only; an MLP refuses it (tested below)
COMBINATIONS = [
    (kind, loss, task, name)
    for kind, loss, task in CASES
    for name in OPTIMIZERS
    if not (name == "normalized" and kind == "mlp")
]


@pytest.mark.parametrize(("kind", "loss", "task", "optimizer_name"), COMBINATIONS)
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


@pytest.mark.parametrize("kind", ["mlp", "embedding_bag", "module"])
def test_the_normalized_optimizer_refuses_non_linear_models_with_a_config_error(
    kind: str,
) -> None:
    spec = ModelSpec(
        kind=kind,  # type: ignore[arg-type]
        features=F,
        hidden=(16,),
        sparse_buckets=50 if kind == "embedding_bag" else 0,
        module="torch.nn.Identity",
    )
    config = TrainerConfig(model=spec, optimizer=optimizer("normalized"), loss="mse")
    with pytest.raises(ConfigError, match="normalized updates linear models"):
        Learner(config)


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
    config = TrainerConfig(  # raw features: standardised, 1e30 would not overflow
        model=ModelSpec(kind="linear", features=F, standardize=False),
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
    layers = [type(m).__name__ for m in Learner(config).network.body]
    assert layers == ["Linear", "ReLU", "Linear"]
    assert (config.resolved_loss, config.outputs, config.optimizer.lr) == ("mse", 1, 0.01)


def test_any_module_by_dotted_path() -> None:
    spec = ModelSpec(  # `features` sizes the input layer (and the decoder) for modules too
        kind="module",
        features=F,
        module="torch.nn.Linear",
        module_kwargs={"in_features": F, "out_features": 1},
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


# --- named features: every kind learns from numeric + categorical fields, exports, resumes --


SPACE = FeatureSpace(
    numeric=("amount", "age"),
    categorical=("colour", "shop"),
    crosses=(("colour", "shop"),),
    buckets=64,
)
COLOURS = ["red", "green", "blue", "black", "white", "pink"]
LIKED = {"red", "green", "blue"}


class HashedModule(torch.nn.Module):
    """A user module with ids: mean of bucket weights plus a linear layer of the features."""

    def __init__(self, features: int, buckets: int) -> None:
        super().__init__()
        self.dense = torch.nn.Linear(features, 1)
        self.embedding = torch.nn.Embedding(buckets, 1, padding_idx=0)

    def forward(self, z: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != 0).unsqueeze(-1).to(z.dtype)
        return self.dense(z) + (self.embedding(ids) * mask).sum(dim=1)


def named_stream(task: str, n: int, seed: int = 0) -> Batch:
    """Records whose label depends on the colour (a category) and on a raw-scaled amount,
    with missing values (NaN amounts, absent colours) among them."""
    rng = np.random.default_rng(seed)
    records: list[dict[str, float | str | None]] = []
    scores = np.zeros(n)
    for i in range(n):
        colour = COLOURS[int(rng.integers(len(COLOURS)))]
        amount = float(rng.normal(500.0, 100.0))
        scores[i] = (1.5 if colour in LIKED else -1.5) + (amount - 500.0) / 100.0
        records.append(
            {
                "amount": None if rng.random() < 0.1 else amount,
                "age": float(rng.integers(18, 90)),
                "colour": None if rng.random() < 0.05 else colour,
                "shop": f"shop-{int(rng.integers(5))}",
            }
        )
    dense, ids = Featurizer(SPACE).rows(records)
    if task == "regression":
        y = (scores + rng.normal(scale=0.1, size=n)).astype(np.float32)
        labels = torch.from_numpy(y)
    elif task == "binary":
        labels = torch.from_numpy((scores + rng.normal(scale=0.3, size=n) > 0).astype(np.float32))
    else:
        labels = torch.from_numpy(np.digitize(scores, [-1.0, 1.0]).astype(np.int64))
    return Batch(torch.from_numpy(dense), labels, sparse=torch.from_numpy(ids), named=True)


NAMED = [
    ("linear", "regression", {}),
    ("logistic", "binary", {}),
    ("softmax", "multiclass", {"classes": 3}),
    ("mlp", "binary", {"hidden": (16,), "loss": "bce"}),
    ("embedding_bag", "binary", {}),
    ("module", "binary", {"loss": "bce"}),
]


def named_config(kind: str, extra: dict[str, object]) -> TrainerConfig:
    extra = dict(extra)
    loss = extra.pop("loss", "auto")
    model: dict[str, object] = {"kind": kind, "features": 2, "sparse_buckets": SPACE.buckets}
    if kind == "module":
        model |= {
            "module": f"{__name__}.HashedModule",
            "module_kwargs": {"features": 2, "buckets": SPACE.buckets},
        }
    return TrainerConfig(
        model=ModelSpec(**(model | extra)),  # type: ignore[arg-type]
        loss=loss,  # type: ignore[arg-type]
        optimizer=OptimizerSpec(name="adam", lr=0.01) if kind == "mlp" else OptimizerSpec(),
        metrics_window=500,
    )


@pytest.mark.parametrize(("kind", "task", "extra"), NAMED, ids=[k for k, _, _ in NAMED])
def test_every_kind_learns_named_features_with_missing_values_and_exports_them(
    kind: str, task: str, extra: dict[str, object]
) -> None:
    config = named_config(kind, extra)
    data = named_stream(task, 4000)
    assert torch.isnan(data.features).any() and (data.sparse == 0).any()  # type: ignore[operator]
    learner = Learner(config)
    assert learner.uses_sparse
    learner.learn(data)
    assert (learner.applied, learner.skipped, learner.diverging) == (4000, 0, 0)
    final = learner.metrics.snapshot()
    if task == "regression":
        assert final["rmse"] < 0.7, final  # label sd 1.8: the colour alone moves it by 3
    else:
        assert final["accuracy"] > (0.85 if task == "binary" else 0.75), final
    # the input layer standardised the raw amounts with their running statistics
    scaler = learner.network.scaler
    observed = np.nanmean(data.features.numpy().astype(np.float64), axis=0)
    np.testing.assert_allclose(scaler.mean.numpy(), observed, rtol=1e-6)
    assert scaler.count[0] == int((~torch.isnan(data.features[:, 0])).sum())
    probe = data.slice(0, 32)
    assert torch.isnan(probe.features).any() and (probe.sparse != 0).any()  # type: ignore[operator]
    exporter = OnnxExporter(learner, probe)  # verifies ONNX against torch on the probe
    served = make_session(exporter.export(), "cpu").run(
        [OUTPUT],
        {INPUT: data.features[100:140].numpy(), "sparse": data.sparse[100:140].numpy()},  # type: ignore[index]
    )[0]
    np.testing.assert_allclose(served, learner.predict(data.slice(100, 140)), atol=1e-5)


def test_a_category_never_seen_before_adds_nothing_to_a_linear_model() -> None:
    learner = Learner(named_config("logistic", {}))
    learner.learn(named_stream("binary", 500))
    data = named_stream("binary", 4, seed=9)
    unseen = data.sparse.clone()  # type: ignore[union-attr]
    unseen[:, 0] = 63 if not learner._seen[63] else 0
    missing = data.sparse.clone()  # type: ignore[union-attr]
    missing[:, 0] = 0
    as_unseen = learner.predict(Batch(data.features, data.labels, sparse=unseen, named=True))
    as_missing = learner.predict(Batch(data.features, data.labels, sparse=missing, named=True))
    np.testing.assert_array_equal(as_unseen, as_missing)


@pytest.mark.parametrize(("kind", "task", "extra"), NAMED, ids=[k for k, _, _ in NAMED])
def test_named_checkpoints_continue_bit_for_bit(
    kind: str, task: str, extra: dict[str, object], tmp_path: Path
) -> None:
    config = named_config(kind, extra)
    data = named_stream(task, 900, seed=3)
    straight = Learner(config)
    straight.learn(data)
    first = Learner(config)
    first.learn(data.slice(0, 517))
    path = tmp_path / "c.ckpt"
    checkpoint.save(path, {"learner": first.state()})  # loads with the weights-only unpickler
    payload = checkpoint.load(path)
    assert payload is not None
    second = Learner(config)
    second.restore(payload["learner"])
    second.learn(data.slice(517, 900))
    for (name, a), (_, b) in zip(
        straight.network.state_dict().items(), second.network.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert straight.state()["guard"] == second.state()["guard"]
    assert straight.state()["drift"] == second.state()["drift"]
    for attribute in ("applied", "skipped", "diverging", "drifts", "last_drift_event"):
        assert getattr(straight, attribute) == getattr(second, attribute), attribute
    assert straight.new_categories == second.new_categories > 0
    assert np.array_equal(straight._seen, second._seen)
    assert second.metrics.snapshot() == straight.metrics.snapshot()


@pytest.mark.parametrize("drift", ["adwin", "page_hinkley", "off"])
def test_checkpoints_of_every_drift_detector_load_and_continue(drift: str, tmp_path: Path) -> None:
    """Each detector's state goes through torch's weights-only unpickler, mid-stream."""
    config = TrainerConfig(
        model=ModelSpec(kind="logistic", features=F),
        optimizer=OptimizerSpec(name="adam", lr=0.05),
        drift=drift,  # type: ignore[arg-type]
    )
    before, after = stream("binary", 2000, seed=1), stream("binary", 2000, seed=2)
    flipped = Batch(after.features, 1 - after.labels)  # the concept flips: a drift to carry
    first = Learner(config)
    first.learn(before)
    path = tmp_path / "c.ckpt"
    checkpoint.save(path, {"learner": first.state()})
    payload = checkpoint.load(path)
    assert payload is not None
    straight, second = Learner(config), Learner(config)
    straight.learn(before)
    second.restore(payload["learner"])
    straight.learn(flipped)
    second.learn(flipped)
    assert straight.state()["drift"] == second.state()["drift"]
    assert (straight.drifts, straight.last_drift_event) == (
        second.drifts,
        second.last_drift_event,
    )
    assert (straight.drifts > 0) == (drift != "off")


@pytest.mark.parametrize(("kind", "loss", "task"), CASES)
def test_every_kind_learns_its_task_distilled_from_a_registered_teacher(
    kind: str, loss: str, task: str
) -> None:
    from services.trainer.config import DistillSpec
    from services.trainer.distill import OnnxTabularTeacher

    spec = ModelSpec(kind=kind, features=F, hidden=(16,) if kind == "mlp" else (), classes=3)  # type: ignore[arg-type]
    base = TrainerConfig(model=spec, optimizer=optimizer("adam"), loss=loss, metrics_window=500)  # type: ignore[arg-type]
    teacher_learner = learn(base, task, seed=7)
    probe = stream(task, 16, seed=8)
    outputs = 3 if task == "multiclass" else 1
    teacher = OnnxTabularTeacher(OnnxExporter(teacher_learner, probe).export(), "t:v1", F, outputs)
    distilled = base.model_copy(update={"distill": DistillSpec(teacher="t", weight=0.5)})
    learner = Learner(distilled, teacher=teacher)
    learner.learn(stream(task, 3000))
    final = learner.metrics.snapshot()
    if task == "regression":
        assert final["rmse"] < 0.6, final
    else:
        assert final["accuracy"] > (0.8 if task == "binary" else 0.75), final
    assert learner.applied == 3000 and learner.skipped == 0
