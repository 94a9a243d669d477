"""Where a trainer learns: the device per model family, and torch's CPU thread count.

`device: auto` places each model family where it learns fastest:

- linear, logistic and softmax models stay on the CPU. Learning event by event, the
  single-output ones (linear, logistic; MSE, Huber or BCE) take the compiled (numba) path
  of `fused.py`; the others use torch on the CPU. A GPU would launch kernels and copy
  tensors for every event (or mini-batch) of a model a few hundred parameters wide, which
  is slower than the CPU.
- MLPs, embedding bags and user modules run on the GPU when one is present, else on the CPU.

`cpu` and `cuda` force a device; `cuda` without a GPU refuses to start (ConfigError).

Transport-free: `choose` is told whether a GPU is present and `cpu_quota` where the cgroup
files are, so both are tested without a GPU or a container.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from services.trainer.config import TrainerConfig
from services.trainer.fused_learner import compiled_path
from shared.errors import ConfigError

LINEAR_KINDS = frozenset({"linear", "logistic", "softmax"})
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


@dataclass(frozen=True)
class Placement:
    """Where a learner runs, whether it takes the compiled per-event path, and why."""

    device: Literal["cpu", "cuda"]
    compiled: bool
    reason: str

    @property
    def path(self) -> str:
        """`compiled` (numba, CPU), `torch-cpu` or `torch-cuda`: for logs and metrics."""
        return "compiled" if self.compiled else f"torch-{self.device}"


def choose(config: TrainerConfig, setting: str, cuda_available: bool) -> Placement:
    """The device `setting` (TRAINER_DEVICE) means for this model family.

    Args:
        config: What is learned (model kind, batch size, loss).
        setting: `auto`, `cpu` or `cuda`.
        cuda_available: Whether torch sees a CUDA GPU.

    Returns:
        The placement and the reason for it, in words.

    Raises:
        ConfigError: `cuda` without a GPU, or an unknown setting.

    """
    kind = config.model.kind
    compiled = compiled_path(config)
    if setting == "cuda":
        if not cuda_available:
            raise ConfigError(
                "TRAINER_DEVICE=cuda but torch sees no CUDA GPU (no device, or an NVIDIA "
                "driver too old for torch's CUDA build); use TRAINER_DEVICE=auto or cpu"
            )
        return Placement("cuda", False, "TRAINER_DEVICE=cuda")
    if setting == "cpu":
        return Placement("cpu", compiled, "TRAINER_DEVICE=cpu")
    if setting != "auto":
        raise ConfigError(f"TRAINER_DEVICE must be auto, cpu or cuda, not {setting!r}")
    if kind in LINEAR_KINDS:
        if compiled:
            why = (
                "learned event by event on the compiled CPU path (a GPU launches kernels per event)"
            )
        else:
            why = "too small for a GPU to pay for its kernel launches and copies: torch on the CPU"
        return Placement("cpu", compiled, f"auto: {kind} model, {why}")
    if cuda_available:
        return Placement("cuda", False, f"auto: {kind} model, on the GPU")
    return Placement("cpu", False, f"auto: {kind} model, on the CPU (no CUDA GPU present)")


def cpu_quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """CPUs the cgroup quota of this process (or of a parent cgroup) allows; None: no quota.

    Reads cgroup v2 `cpu.max` ("max 100000" or "200000 100000") and cgroup v1
    `cpu.cfs_quota_us` / `cpu.cfs_period_us`, from this process's cgroup up to the root.
    """
    limits: list[float] = []
    for line in _read(proc_cgroup).splitlines():
        if line.count(":") < 2:
            continue
        _, controllers, path = line.split(":", 2)
        relative = path.strip("/")
        if controllers == "":  # cgroup v2
            for folder in _up(root, relative):
                limits += _v2_limit(_read(folder / "cpu.max"))
        elif "cpu" in controllers.split(","):
            for mount in (root / "cpu", root / controllers):
                for folder in _up(mount, relative):
                    limits += _v1_limit(folder)
    return min(limits) if limits else None


def default_threads(quota: float | None, affinity: int) -> int:
    """Threads for `quota` CPUs (rounded up), never more than the CPUs this process may use."""
    if quota is None:
        return max(1, affinity)
    return max(1, min(affinity, math.ceil(quota)))


def torch_threads(setting: int) -> int:
    """TRAINER_TORCH_THREADS, or (0) the container's CPU quota / this process's affinity."""
    if setting > 0:
        return setting
    return default_threads(cpu_quota(), len(os.sched_getaffinity(0)))


def _up(base: Path, relative: str) -> list[Path]:
    """`base/relative` and each of its parents up to `base`."""
    parts = [p for p in relative.split("/") if p]
    return [base.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def _v2_limit(text: str) -> list[float]:
    fields = text.split()
    if len(fields) != 2 or fields[0] == "max":
        return []
    return [int(fields[0]) / int(fields[1])]


def _v1_limit(folder: Path) -> list[float]:
    quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
    if not quota or not period or int(quota) <= 0:
        return []
    return [int(quota) / int(period)]


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""
