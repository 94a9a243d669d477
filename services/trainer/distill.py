"""Distillation of a tabular model: soft targets from a registered teacher beside the labels.

The teacher is a registered version run in-process with ONNX Runtime on the same rows
(its graph has its own input scaling, so it takes the raw features, and the hashed ids when
it has a `sparse` input); it gives what it would serve: P(1), class probabilities or a value.
Each event's loss becomes (1 - weight) x the labels' loss + weight x the soft-target loss:

- binary: T^2 x BCE(sigmoid(z / T), sigmoid(logit(p_teacher) / T));
- multiclass: T^2 x cross-entropy(softmax(z / T), softmax(log p_teacher / T));
- regression: the squared distance to the teacher's value (temperature does not apply).

The cross-entropies differ from the KL divergence by the teacher's entropy only, which
moves no gradient.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812  # torch's own convention

from shared.errors import ConfigError
from shared.ort import make_session
from shared.serving import INPUT, OUTPUT

if TYPE_CHECKING:
    from services.trainer.config import DistillSpec
    from shared.clients.registry import RegistryClient

log = logging.getLogger(__name__)
SPARSE_INPUT = "sparse"  # as services/trainer/export.py names it
TeacherT = TypeVar("TeacherT")
_EPS = 1e-6


class TabularTeacher(Protocol):
    """What a teacher serves for rows of features (and hashed ids)."""

    def __call__(self, features: np.ndarray, sparse: np.ndarray | None) -> np.ndarray:
        """(N, outputs) float32 predictions."""
        ...


class OnnxTabularTeacher:
    """A registered tabular version, run by ONNX Runtime in this process."""

    def __init__(self, onnx_bytes: bytes, name: str, features: int, outputs: int) -> None:
        """Load and check the graph against the student's inputs and outputs.

        Raises:
            ConfigError: not a tabular model of this many features and outputs.

        """
        self.name = name
        try:
            self._session = make_session(onnx_bytes, "cpu")
        except Exception as exc:  # ONNX Runtime raises its own types for bad graphs
            raise ConfigError(f"teacher {name} cannot be loaded: {exc}") from exc
        inputs = {i.name: i.shape for i in self._session.get_inputs()}
        outputs_of = {o.name: o.shape for o in self._session.get_outputs()}
        if INPUT not in inputs or OUTPUT not in outputs_of or set(inputs) - {INPUT, SPARSE_INPUT}:
            raise ConfigError(f"teacher {name} is no tabular model ({sorted(inputs)})")
        width, served = inputs[INPUT][-1], outputs_of[OUTPUT][-1]
        if (isinstance(width, int) and width != features) or (
            isinstance(served, int) and served != outputs
        ):
            raise ConfigError(
                f"teacher {name} takes {width} features and gives {served} outputs; the "
                f"student {features} and {outputs}"
            )
        self._sparse = SPARSE_INPUT in inputs

    def __call__(self, features: np.ndarray, sparse: np.ndarray | None) -> np.ndarray:
        """(N, outputs) float32 predictions."""
        feeds = {INPUT: features.astype(np.float32, copy=False)}
        if self._sparse:
            ids = np.zeros((len(features), 1), np.int64) if sparse is None else sparse
            feeds[SPARSE_INPUT] = ids.astype(np.int64, copy=False)
        out: np.ndarray = self._session.run([OUTPUT], feeds)[0]
        return out


def soft_losses(
    task: str, scores: torch.Tensor, teacher: torch.Tensor, temperature: float
) -> torch.Tensor:
    """The per-event soft-target loss of the student's raw `scores` (N, outputs)."""
    if task == "regression":
        return ((scores - teacher) ** 2).sum(dim=-1)
    if task == "binary":
        p = teacher.clamp(_EPS, 1 - _EPS)
        target = torch.sigmoid(torch.log(p / (1 - p)) / temperature)
        soft = F.binary_cross_entropy_with_logits(
            scores / temperature, target, reduction="none"
        ).sum(dim=-1)
        return soft * temperature**2
    target = torch.softmax(torch.log(teacher.clamp_min(_EPS)) / temperature, dim=-1)
    soft = -(target * torch.log_softmax(scores / temperature, dim=-1)).sum(dim=-1)
    return soft * temperature**2


def registered_teacher(
    spec: DistillSpec | None,
    registry: RegistryClient | None,
    load: Callable[[bytes, str], TeacherT],
) -> tuple[TeacherT | None, dict[str, str]]:
    """The distillation teacher of `spec`, from the registry, and the tag naming its version.

    Resolved once (a trainer's start, a replay): the student keeps learning from that
    version, as an alias moving mid-stream would change the targets under the same config.
    `load` makes the teacher of the version's bytes and name (`model:vN`).

    Raises:
        ConfigError: distillation without a registry, or a teacher `load` refuses.
        NotFound: the teacher's model, version or alias does not exist.

    """
    if spec is None:
        return None, {}
    if registry is None:
        raise ConfigError("distillation needs the registry, where the teacher is")
    alias = "" if spec.version else spec.alias
    version, data = registry.download(spec.teacher, version=spec.version, alias=alias)
    name = f"{spec.teacher}:v{version.version}"
    log.info("distillation teacher loaded", extra={"teacher": name})
    return load(data, name), {"teacher": name}  # versions.TEACHER_TAG
