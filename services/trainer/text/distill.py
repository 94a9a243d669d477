"""Distillation: a language model learns online from a teacher's soft targets too.

The teacher is a registered version (any alias or number) run in-process with ONNX Runtime:
for each step's windows it gives next-byte log-probabilities, and the student's loss is

    (1 - weight) * cross-entropy(true next bytes) + weight * T^2 * KL(teacher_T || student_T)

with both distributions softened by the temperature T (Hinton et al.; the T^2 keeps the
gradients' scale as T changes). The student is usually smaller (its own `layers`, `width`);
the teacher must see at least the student's context.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from shared.errors import ConfigError
from shared.ort import make_session
from shared.serving import LOGPROBS_OUTPUT, TEXT_CONTEXT_KEY, TEXT_INPUT


class Teacher(Protocol):
    """Next-byte log-probabilities (N, T, 256) of byte ids (N, T) uint8."""

    context: int

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        """The teacher's log-probabilities at every position."""
        ...


class OnnxTeacher:
    """A registered language-model version, run by ONNX Runtime in this process."""

    def __init__(self, onnx_bytes: bytes, name: str) -> None:
        """Load and check the graph (`text` in, `logprobs` out, a context).

        Raises:
            ConfigError: the version is no byte language model.

        """
        self.name = name
        try:
            self._session = make_session(onnx_bytes, "cpu")
        except Exception as exc:  # ONNX Runtime raises its own types for bad graphs
            raise ConfigError(f"teacher {name} cannot be loaded: {exc}") from exc
        inputs = [i.name for i in self._session.get_inputs()]
        outputs = [o.name for o in self._session.get_outputs()]
        meta = self._session.get_modelmeta().custom_metadata_map
        if inputs != [TEXT_INPUT] or LOGPROBS_OUTPUT not in outputs or TEXT_CONTEXT_KEY not in meta:
            raise ConfigError(f"teacher {name} is no byte language model ({inputs} -> {outputs})")
        self.context = int(meta[TEXT_CONTEXT_KEY])

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        """The teacher's log-probabilities at every position."""
        out: np.ndarray = self._session.run([LOGPROBS_OUTPUT], {TEXT_INPUT: ids})[0]
        return out


def soft_target_loss(
    student_logits: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    mask: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """T^2 * KL(teacher_T || student_T), averaged over the real positions of `mask`."""
    teacher = torch.log_softmax(teacher_logprobs.float() / temperature, dim=-1)
    student = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    kl = (teacher.exp() * (teacher - student)).sum(dim=-1)
    return torch.where(mask, kl, 0.0).sum() / mask.sum() * temperature**2
