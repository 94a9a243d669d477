"""Distillation of a byte language model: a student learns a registered teacher's soft targets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from services.trainer.config import DistillSpec
from services.trainer.text.config import TextModelConfig
from services.trainer.text.distill import OnnxTeacher, soft_target_loss
from services.trainer.text.export import TextOnnxExporter
from services.trainer.text.learner import TextLearner
from services.trainer.text.windows import training_windows
from shared.errors import ConfigError
from shared.onnx_models import linear_model

TEACHER = TextModelConfig(layers=2, width=64, heads=4, context=16, seed=3)
STUDENT = TextModelConfig(layers=1, width=16, heads=2, context=16, seed=5)
TEXTS = [b"one two three four five six " * 2 for _ in range(120)]


@pytest.fixture(scope="module")
def teacher() -> OnnxTeacher:
    learner = TextLearner(TEACHER)
    learner.learn(TEXTS)
    return OnnxTeacher(TextOnnxExporter(learner).export(), "big:v1")


def distilled(weight: float, temperature: float = 2.0) -> TextModelConfig:
    spec = DistillSpec(teacher="big", weight=weight, temperature=temperature)
    return STUDENT.model_copy(update={"distill": spec})


def kl_to_teacher(student: TextLearner, teacher: OnnxTeacher) -> float:
    windows = training_windows(TEXTS[:8], STUDENT.context)
    with torch.no_grad():
        logits = student.network(windows.inputs)
    targets = torch.from_numpy(teacher(windows.inputs.numpy().astype(np.uint8)))
    return float(soft_target_loss(logits, targets, windows.mask, 1.0))


def test_soft_target_loss_on_a_constructed_case() -> None:
    teacher = torch.log(torch.tensor([[[0.5, 0.5], [0.9, 0.1]]]))
    student = torch.log(torch.tensor([[[0.5, 0.5], [0.5, 0.5]]]))
    mask = torch.tensor([[True, True]])
    kl = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert float(soft_target_loss(student, teacher, mask, 1.0)) == pytest.approx(kl / 2)
    only_first = torch.tensor([[True, False]])
    assert float(soft_target_loss(student, teacher, only_first, 1.0)) == pytest.approx(0.0)
    same = float(soft_target_loss(teacher, teacher, mask, 4.0))
    assert same == pytest.approx(0.0, abs=1e-7)


def test_the_student_learns_the_teachers_distribution(teacher: OnnxTeacher) -> None:
    fresh = TextLearner(STUDENT)
    student = TextLearner(distilled(1.0, temperature=1.0), teacher=teacher)
    before = kl_to_teacher(fresh, teacher)
    student.learn(TEXTS)
    assert kl_to_teacher(student, teacher) < before / 4
    alone = TextLearner(distilled(0.0), teacher=teacher)  # weight 0: the labels only
    plain = TextLearner(STUDENT)
    alone.learn(TEXTS[:20])
    plain.learn(TEXTS[:20])
    for a, b in zip(alone.network.parameters(), plain.network.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_a_teacher_is_needed_and_must_see_the_students_context(teacher: OnnxTeacher) -> None:
    with pytest.raises(ConfigError, match="no teacher"):
        TextLearner(distilled(0.5))
    wide = distilled(0.5).model_copy(update={"context": 32})
    with pytest.raises(ConfigError, match="context"):
        TextLearner(wide, teacher=teacher)
    with pytest.raises(ConfigError, match="no byte language model"):
        OnnxTeacher(linear_model(np.ones(3, np.float32), 0.0), "tabular:v1")
    with pytest.raises(ConfigError, match="cannot be loaded"):
        OnnxTeacher(b"not a graph", "junk:v1")
