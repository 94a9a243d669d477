"""INFERENCE_WORKERS: what each worker process is started with, and what is refused."""

from __future__ import annotations

import threading

import pytest

from services.inference.settings import InferenceSettings
from services.inference.workers import check, supervise, worker_environment
from shared.errors import ConfigError


def test_each_worker_is_one_process_binding_with_reuse_port_on_its_own_metrics_port() -> None:
    settings = InferenceSettings(workers=3, grpc_port=8001, metrics_port=8002)
    envs = [worker_environment(settings, i, {"PATH": "/bin"}) for i in range(3)]
    assert [e["INFERENCE_METRICS_PORT"] for e in envs] == ["8002", "8003", "8004"]
    assert all(e["INFERENCE_WORKERS"] == "1" and e["INFERENCE_REUSE_PORT"] == "true" for e in envs)
    assert all(e["PATH"] == "/bin" for e in envs)  # the rest of the environment is passed on
    # A worker's own settings read back from that environment: one process, port shared.
    worker = InferenceSettings.model_validate(
        {"workers": envs[1]["INFERENCE_WORKERS"], "reuse_port": True, "metrics_port": 8003}
    )
    assert worker.workers == 1 and worker.reuse_port


def test_without_metrics_no_worker_exports_them() -> None:
    settings = InferenceSettings(workers=2, grpc_port=8001, metrics_port=0)
    assert {worker_environment(settings, i, {})["INFERENCE_METRICS_PORT"] for i in (0, 1)} == {"0"}


@pytest.mark.parametrize(
    ("grpc_port", "metrics_port", "error"),
    [(0, 8002, "fixed INFERENCE_GRPC_PORT"), (8001, 65535, "exceeds 65535")],
)
def test_worker_settings_that_cannot_share_a_port_are_refused_before_any_start(
    grpc_port: int, metrics_port: int, error: str
) -> None:
    settings = InferenceSettings(workers=2, grpc_port=grpc_port, metrics_port=metrics_port)
    with pytest.raises(ConfigError, match=error):
        check(settings)
    with pytest.raises(ConfigError, match=error):
        supervise(settings, threading.Event())


def test_one_worker_needs_no_fixed_port() -> None:
    check(InferenceSettings(workers=1, grpc_port=0, metrics_port=0))
