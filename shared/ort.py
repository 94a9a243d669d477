"""ONNX Runtime sessions: CUDA when a GPU is present, CPU otherwise, tuned for small models."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import onnxruntime as ort

log = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]


def gpu_present() -> bool:
    """True when an NVIDIA driver is loaded (the CUDA build imports fine without one)."""
    return Path("/proc/driver/nvidia/version").exists()


def providers_for(device: Device) -> list[str]:
    """Execution providers to ask for, best first."""
    cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "cuda" or (device == "auto" and cuda and gpu_present()):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def session_options(intra_op_threads: int = 1) -> ort.SessionOptions:
    """Options for small models served at low latency.

    One intra-op thread avoids thread-pool wake-ups that cost more than tiny kernels, and no
    spinning leaves the cores to the gRPC threads.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def make_session(
    model: bytes, device: Device = "auto", intra_op_threads: int = 1
) -> ort.InferenceSession:
    """A session on the best available device; falls back to CPU if CUDA cannot start."""
    wanted = providers_for(device)
    session = ort.InferenceSession(model, session_options(intra_op_threads), providers=wanted)
    if wanted[0] not in session.get_providers():
        log.warning(
            "CUDA provider unavailable, serving on CPU",
            extra={"providers": session.get_providers()},
        )
    return session
