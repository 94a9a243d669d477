"""Trainer settings (env prefix `TRAINER_`)."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from services.trainer.config import TrainerConfig
from shared.settings import ServiceSettings


class TrainerSettings(ServiceSettings):
    """What the trainer learns, from where, and how often it checkpoints and publishes."""

    model_config = SettingsConfigDict(env_prefix="TRAINER_")

    metrics_port: int = Field(default=9102, ge=0, le=65535)
    # gRPC health only (service `streamlearn.trainer`): readiness for supervisors and probes.
    grpc_port: int = Field(default=50053, ge=0, le=65535)
    # One group per model, so trainers of different models on one training topic each read
    # every partition. Empty: `streamlearn-trainer-<model_name>`.
    consumer_group: str = ""
    # The one stream this trainer learns (and names in lineage): records of other streams on
    # the training topic are skipped and counted. Empty: the stream named like the model.
    stream: str = ""
    model_name: str = "demo"
    # auto: the compiled CPU path for linear models, a GPU (when present) for the others;
    # cpu / cuda force one (cuda without a GPU refuses to start). See `device.py`.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # torch's intra-op threads; 0: the container's CPU quota (cgroup cpu.max) or affinity.
    torch_threads: int = Field(default=0, ge=0)
    registry_address: str = "127.0.0.1:50052"
    checkpoint_every_events: int = Field(default=10_000, gt=0)
    checkpoint_every_s: float = Field(default=10.0, gt=0)
    version_every_events: int = Field(default=5_000, gt=0)
    version_every_s: float = Field(default=5.0, gt=0)
    # This instance's static group membership id (and lineage's trainer id); Kubernetes sets
    # the pod name. Empty: host name + a hash of the state directory, so a restart keeps its
    # id while a second trainer elsewhere (another host or state) has another and is refused
    # (the same id would instead fence the live one: see `single.py`).
    trainer_id: str = ""
    fetch_max: int = Field(default=5000, ge=1)
    # Bytes per partition per fetch: large fetches keep a CPU-busy trainer fed (measured on
    # 2 cores: 1 MiB caps it near 130k events/s, 32 MiB lets it reach about 290k).
    fetch_partition_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    # What to learn: TRAINER_CONFIG='{"model": {"kind": "mlp", "hidden": [10]}}' or nested
    # variables such as TRAINER_CONFIG__OPTIMIZER__LR=0.05.
    config: TrainerConfig = TrainerConfig()

    @model_validator(mode="before")
    @classmethod
    def _stream_and_group_default_to_the_model(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        model = data.get("model_name") or "demo"
        if not data.get("stream"):
            data = {**data, "stream": model}
        if not data.get("consumer_group"):
            data = {**data, "consumer_group": f"streamlearn-trainer-{model}"}
        return data

    @model_validator(mode="after")
    def _trainer_id_defaults_to_this_host_and_state(self) -> TrainerSettings:
        if not self.trainer_id:
            state = hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()[:8]
            # The model is frozen; this fills a default derived from other fields, once.
            object.__setattr__(self, "trainer_id", f"{socket.gethostname()}-{state}")
        return self

    @property
    def checkpoint_path(self) -> Path:
        """One checkpoint file per model under the state directory."""
        return self.state_dir / "trainer" / f"{self.model_name}.ckpt"
