"""Where the trainer learns: device per model family, CUDA refused without a GPU, threads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from services.trainer import device
from services.trainer.config import ModelSpec, OptimizerSpec, TrainerConfig
from services.trainer.device import Placement, choose, cpu_quota, default_threads
from services.trainer.learner import Learner
from services.trainer.settings import TrainerSettings
from shared.errors import ConfigError


def config(kind: str, batch_size: int = 1, **model: object) -> TrainerConfig:
    extra: dict[str, object] = {"sparse_buckets": 16} if kind == "embedding_bag" else {}
    if kind == "module":
        extra = {"module": "torch.nn.Identity"}
    return TrainerConfig(
        model=ModelSpec(kind=kind, features=4, **(extra | model)),  # type: ignore[arg-type]
        batch_size=batch_size,
    )


# (kind, batch size) -> where `auto` puts it with a GPU present, and whether compiled.
AUTO_WITH_GPU = {
    ("linear", 1): ("cpu", True),
    ("logistic", 1): ("cpu", True),
    ("logistic", 64): ("cpu", False),
    ("softmax", 1): ("cpu", False),
    ("mlp", 1): ("cuda", False),
    ("mlp", 256): ("cuda", False),
    ("embedding_bag", 32): ("cuda", False),
    ("module", 32): ("cuda", False),
}


@pytest.mark.parametrize(("kind", "batch_size"), sorted(AUTO_WITH_GPU))
def test_auto_places_each_family_with_and_without_a_gpu(kind: str, batch_size: int) -> None:
    wanted, compiled = AUTO_WITH_GPU[(kind, batch_size)]
    with_gpu = choose(config(kind, batch_size), "auto", cuda_available=True)
    assert (with_gpu.device, with_gpu.compiled) == (wanted, compiled)
    assert with_gpu.reason.startswith(f"auto: {kind} model")
    without = choose(config(kind, batch_size), "auto", cuda_available=False)
    assert (without.device, without.compiled) == ("cpu", compiled)


@pytest.mark.parametrize(("kind", "batch_size"), sorted(AUTO_WITH_GPU))
@pytest.mark.parametrize("gpu", [True, False])
def test_cpu_forces_the_cpu_and_keeps_the_compiled_path_where_it_applies(
    kind: str, batch_size: int, gpu: bool
) -> None:
    placed = choose(config(kind, batch_size), "cpu", cuda_available=gpu)
    assert placed == Placement("cpu", AUTO_WITH_GPU[(kind, batch_size)][1], "TRAINER_DEVICE=cpu")


@pytest.mark.parametrize(("kind", "batch_size"), sorted(AUTO_WITH_GPU))
def test_cuda_forces_the_gpu_even_for_linear_models(kind: str, batch_size: int) -> None:
    placed = choose(config(kind, batch_size), "cuda", cuda_available=True)
    assert placed == Placement("cuda", False, "TRAINER_DEVICE=cuda")
    assert placed.path == "torch-cuda"


def test_cuda_without_a_gpu_is_a_start_up_error_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match="TRAINER_DEVICE=cuda"):
        choose(config("mlp"), "cuda", cuda_available=False)
    with pytest.raises(ConfigError, match="TRAINER_DEVICE"):
        choose(config("mlp"), "gpu", cuda_available=True)


def test_the_path_names_what_runs() -> None:
    assert choose(config("logistic"), "auto", True).path == "compiled"
    assert choose(config("softmax"), "auto", True).path == "torch-cpu"
    assert choose(config("mlp"), "auto", True).path == "torch-cuda"


def test_a_logistic_learner_on_auto_keeps_the_compiled_cpu_path_when_a_gpu_is_present(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    learner = Learner(config("logistic"), "auto")
    assert learner.device.type == "cpu"
    assert learner.placement.compiled and learner._fused is not None


def test_a_learner_forced_to_cuda_without_a_gpu_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="TRAINER_DEVICE=cuda"):
        Learner(config("logistic"), "cuda")


def test_a_learner_without_the_compiled_path_says_so() -> None:
    learner = Learner(TrainerConfig(optimizer=OptimizerSpec()), "cpu", fused_enabled=False)
    assert learner.placement.path == "torch-cpu" and learner._fused is None


def cgroup(tmp_path: Path, membership: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(membership)
    return root, proc


def test_the_quota_of_a_cgroup_v2_container(tmp_path: Path) -> None:
    root, proc = cgroup(tmp_path, "0::/\n", {"cpu.max": "150000 100000"})
    assert cpu_quota(root, proc) == 1.5
    assert default_threads(cpu_quota(root, proc), affinity=64) == 2


def test_the_tightest_quota_from_the_process_cgroup_up_to_the_root(tmp_path: Path) -> None:
    root, proc = cgroup(
        tmp_path,
        "0::/kubepods/pod1/trainer\n",
        {
            "cpu.max": "max 100000",
            "kubepods/cpu.max": "800000 100000",
            "kubepods/pod1/cpu.max": "300000 100000",
            "kubepods/pod1/trainer/cpu.max": "max 100000",
        },
    )
    assert cpu_quota(root, proc) == 3.0


def test_no_quota_means_the_cpus_of_the_affinity(tmp_path: Path) -> None:
    root, proc = cgroup(tmp_path, "0::/\n", {"cpu.max": "max 100000"})
    assert cpu_quota(root, proc) is None
    assert default_threads(None, affinity=6) == 6
    assert default_threads(8.0, affinity=6) == 6  # a quota above the affinity
    assert default_threads(0.25, affinity=6) == 1


def test_the_quota_of_a_cgroup_v1_container(tmp_path: Path) -> None:
    root, proc = cgroup(
        tmp_path,
        "4:memory:/x\n2:cpu,cpuacct:/\n",
        {"cpu,cpuacct/cpu.cfs_quota_us": "250000", "cpu,cpuacct/cpu.cfs_period_us": "100000"},
    )
    assert cpu_quota(root, proc) == 2.5
    unlimited, proc = cgroup(tmp_path / "u", "1:cpu:/\n", {"cpu/cpu.cfs_quota_us": "-1"})
    assert cpu_quota(unlimited, proc) is None


def test_missing_or_garbled_cgroup_files_mean_no_quota(tmp_path: Path) -> None:
    assert cpu_quota(tmp_path / "none", tmp_path / "none") is None
    root, proc = cgroup(tmp_path, "garbage\n", {})
    assert cpu_quota(root, proc) is None


def test_the_thread_setting_wins_over_the_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "cpu_quota", lambda: 1.0)
    assert device.torch_threads(5) == 5
    assert device.torch_threads(0) == 1
    assert TrainerSettings().torch_threads == 0
