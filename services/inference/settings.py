"""Inference settings (env prefix `INFERENCE_`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import GrpcSecurity, ServiceSettings


class InferenceSettings(ServiceSettings):
    """What inference serves and how it batches."""

    model_config = SettingsConfigDict(env_prefix="INFERENCE_")

    # Triton's default gRPC port, so clients' defaults work.
    grpc_port: int = Field(default=8001, ge=0, le=65535)
    metrics_port: int = Field(default=8002, ge=0, le=65535)
    registry_address: str = "127.0.0.1:50052"
    # How this service reaches the registry when it differs from how it serves (`security`):
    # e.g. only TLS to a secured registry, or another certificate. None: `security`.
    registry_security: GrpcSecurity | None = None
    # Every model served by this process; each follows `alias` (or `pinned_version`).
    # From the environment as JSON: INFERENCE_MODEL_NAMES='["demo", "ctr"]'.
    model_names: list[str] = Field(default_factory=lambda: ["demo"], min_length=1)
    alias: str = "production"
    max_batch_size: int = Field(default=64, ge=1)
    max_queue_delay_us: int = Field(default=500, ge=0)
    max_request_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    # Language models: the most bytes of one text (scored, or a prompt), and the most bytes
    # one generation request may ask for (`max_new_bytes`).
    max_text_bytes: int = Field(default=8192, ge=1, le=1 << 20)
    max_new_bytes: int = Field(default=1024, ge=1, le=1 << 16)
    # Serve this version instead of following the alias (0: follow).
    pinned_version: int = Field(default=0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    intra_op_threads: int = Field(default=1, ge=1)
    keep_loaded: int = Field(default=3, ge=1)
    resync_s: float = Field(default=30.0, gt=0)
    grpc_workers: int = Field(default=32, ge=1)
    # Server processes sharing `grpc_port` (SO_REUSEPORT); above 1 this process supervises
    # them (services/inference/workers.py). `reuse_port` is what each worker binds with.
    workers: int = Field(default=1, ge=1, le=64)
    reuse_port: bool = False
    # On SIGTERM: health says NOT_SERVING at once, requests are still answered for
    # `drain_delay_s` (balancers and clients move away), then the server stops, giving
    # in-flight requests `drain_grace_s` to finish. On Kubernetes the preStop sleep already
    # keeps the pod answering while Endpoints forget it, so a second is enough here too.
    drain_delay_s: float = Field(default=1.0, ge=0)
    drain_grace_s: float = Field(default=10.0, ge=0)
    # The prediction log, for the joiner: every answered row to `topics.predictions`
    # (INFERENCE_TOPICS__PREDICTIONS). Off by default; true: every served model; a JSON
    # list: those models only.
    log_predictions: bool | list[str] = False
    # The stream of each logged model (JSON object); a model not named: its own name.
    prediction_log_streams: dict[str, str] = Field(default_factory=dict)
    # Answered requests waiting for the log's writer; beyond it they are dropped (counted).
    prediction_log_queue: int = Field(default=10_000, ge=1)

    def logged_models(self) -> list[str] | None:
        """The models whose predictions are logged: None for every one ([]: none)."""
        if isinstance(self.log_predictions, bool):
            return None if self.log_predictions else []
        return list(self.log_predictions)

    def registry_client(self) -> GrpcSecurity:
        """The security of this service's registry client (see `registry_security`)."""
        return self.registry_security or self.security
