"""Distillation of tabular models: a student learns a registered teacher's soft targets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from services.trainer.config import DistillSpec, ModelSpec, OptimizerSpec, TrainerConfig
from services.trainer.distill import OnnxTabularTeacher, soft_losses
from services.trainer.export import OnnxExporter
from services.trainer.learner import Batch, Learner
from shared.errors import ConfigError
from shared.onnx_models import linear_model

FEATURES = 4
W = np.array([2.0, -1.0, 0.5, 0.0], np.float32)
SPEC = DistillSpec(teacher="big", weight=1.0, temperature=1.0)


def rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, FEATURES)).astype(np.float32)


def student(kind: str, spec: DistillSpec | None = SPEC, classes: int = 2) -> TrainerConfig:
    return TrainerConfig(
        model=ModelSpec(kind=kind, features=FEATURES, classes=classes),
        optimizer=OptimizerSpec(name="adam", lr=0.05),
        distill=spec,
    )


def batch(x: np.ndarray, labels: np.ndarray) -> Batch:
    return Batch(torch.from_numpy(x), torch.from_numpy(labels))


def test_soft_losses_on_constructed_cases() -> None:
    # binary at T=1: the cross-entropy of the student's probability to the teacher's
    z, p = torch.tensor([[0.0]]), torch.tensor([[0.8]])
    assert float(soft_losses("binary", z, p, 1.0)[0]) == pytest.approx(-math.log(0.5))
    # T=2: both softened, times T^2
    target = 1 / (1 + math.exp(-math.log(4) / 2))
    expected = 4 * -(target * math.log(0.5) + (1 - target) * math.log(0.5))
    assert float(soft_losses("binary", z, p, 2.0)[0]) == pytest.approx(expected)
    logits, probs = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.25, 0.75]])
    assert float(soft_losses("multiclass", logits, probs, 1.0)[0]) == pytest.approx(math.log(2))
    value = soft_losses("regression", torch.tensor([[3.0]]), torch.tensor([[1.0]]), 5.0)
    assert float(value[0]) == pytest.approx(4.0)  # temperature does not apply


def test_a_binary_student_learns_the_teachers_probabilities_not_the_labels() -> None:
    teacher = OnnxTabularTeacher(linear_model(W, 0.5), "big:v1", FEATURES, 1)
    learner = Learner(student("logistic"), teacher=teacher)
    assert learner.placement.path.startswith("torch")  # soft targets: not the compiled path
    x = rows(3000)
    noise = np.random.default_rng(1).integers(0, 2, 3000).astype(np.float32)
    learner.learn(batch(x, noise))  # labels are coin flips: only the teacher teaches
    probe = rows(500, seed=2)
    ours = learner.predict(batch(probe, np.zeros(500, np.float32))).reshape(-1)
    theirs = teacher(probe, None).reshape(-1)
    assert np.abs(ours - theirs).max() < 0.05
    labels_only = Learner(student("logistic", None))
    labels_only.learn(batch(x, noise))
    alone = labels_only.predict(batch(probe, np.zeros(500, np.float32))).reshape(-1)
    assert np.abs(alone - theirs).mean() > 5 * np.abs(ours - theirs).mean()


def test_regression_and_multiclass_students_follow_their_teachers() -> None:
    teacher = OnnxTabularTeacher(linear_model(W, 1.0, sigmoid=False), "v:v1", FEATURES, 1)
    learner = Learner(student("linear"), teacher=teacher)
    x = rows(3000)
    noise = np.random.default_rng(4).normal(0, 3, 3000).astype(np.float32)
    learner.learn(batch(x, noise))  # labels unrelated to the features: only the teacher teaches
    probe = rows(200, seed=3)
    predicted = learner.predict(batch(probe, np.zeros(200, np.float32))).reshape(-1)
    assert np.abs(predicted - teacher(probe, None).reshape(-1)).max() < 0.25  # values to +-8
    big = Learner(student("mlp", None, classes=3).model_copy(
        update={"model": ModelSpec(kind="softmax", features=FEATURES, classes=3)}
    ))  # fmt: skip
    labels = (x @ W > 0).astype(np.int64) + (x[:, 1] > 1).astype(np.int64)
    big.learn(Batch(torch.from_numpy(x), torch.from_numpy(labels)))
    onnx_bytes = OnnxExporter(big, batch(x[:16], labels[:16].astype(np.float32))).export()
    softmax_teacher = OnnxTabularTeacher(onnx_bytes, "big:v2", FEATURES, 3)
    config = student("softmax", classes=3)
    small = Learner(config, teacher=softmax_teacher)
    small.learn(Batch(torch.from_numpy(x), torch.zeros(3000, dtype=torch.int64)))
    probs = small.predict(batch(probe, np.zeros(200, np.float32)))
    gap = np.abs(probs - softmax_teacher(probe, None))
    assert gap.mean() < 0.05 and gap.max() < 0.5  # labels all 0: the teacher taught the rest


def test_teachers_that_do_not_fit_are_refused() -> None:
    with pytest.raises(ConfigError, match="no teacher"):
        Learner(student("logistic"))
    with pytest.raises(ConfigError, match="takes 4 features"):
        OnnxTabularTeacher(linear_model(W), "big:v1", 5, 1)
    with pytest.raises(ConfigError, match="cannot be loaded"):
        OnnxTabularTeacher(b"junk", "big:v1", FEATURES, 1)
    with pytest.raises(ValueError, match="normalized"):
        TrainerConfig(optimizer=OptimizerSpec(name="normalized"), distill=SPEC)
