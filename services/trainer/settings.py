"""Trainer settings (env prefix `TRAINER_`)."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from services.trainer.config import TrainerConfig
from services.trainer.text.config import TextModelConfig
from shared.errors import ConfigError
from shared.features import FeatureSpace
from shared.settings import GrpcSecurity, ServiceSettings
from streamlearn.v1 import stream_pb2


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
    # How this service reaches the registry when it differs from how it serves (`security`):
    # e.g. only TLS to a secured registry, or another certificate. None: `security`.
    registry_security: GrpcSecurity | None = None
    # At 400k events/s, 10k meant 40 fsynced checkpoints a second (8% of the loop, measured);
    # a restart re-learns at most this many events (a fraction of a second at that rate).
    checkpoint_every_events: int = Field(default=100_000, gt=0)
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
    # What a text stream's language model is (a stream created with --text-max-bytes):
    # TRAINER_TEXT='{"layers": 4, "width": 256}' or TRAINER_TEXT__OPTIMIZER__LR=0.001.
    text: TextModelConfig = TextModelConfig()

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

    def registry_client(self) -> GrpcSecurity:
        """The security of this service's registry client (see `registry_security`)."""
        return self.registry_security or self.security

    @property
    def checkpoint_path(self) -> Path:
        """One checkpoint file per model under the state directory."""
        return self.state_dir / "trainer" / f"{self.model_name}.ckpt"


def reconcile(
    config: TrainerConfig, definition: stream_pb2.StreamDefinition | None
) -> TrainerConfig:
    """`config` fitted to its stream's feature schema; unchanged for a positional stream.

    A stream with a schema decides the model's inputs: `model.features` is the number of
    numeric features and `model.sparse_buckets` the hash space of its categorical features
    and crosses (none without them). What the config leaves unset (`features` not given,
    `sparse_buckets` 0) is filled from the definition; a value that contradicts it is refused.

    Raises:
        ConfigError: the config names another number of features or another hash space.

    """
    space = FeatureSpace.from_definition(definition) if definition is not None else None
    if definition is None or space is None:
        return config
    model = config.model
    where = f"stream {definition.name!r} (revision {definition.revision})"
    dense = len(space.numeric)
    if "features" in model.model_fields_set and model.features != dense:
        raise ConfigError(
            f"model.features is {model.features} but {where} has {dense} numeric features"
        )
    buckets = space.buckets if space.sparse_slots else 0
    if model.sparse_buckets not in (0, buckets):
        has = f"sparse_buckets {buckets}" if buckets else "no categorical features"
        raise ConfigError(f"model.sparse_buckets is {model.sparse_buckets} but {where} has {has}")
    if model.features == dense and model.sparse_buckets == buckets:
        return config
    data = config.model_dump()
    data["model"] |= {"features": dense, "sparse_buckets": buckets}
    try:
        return TrainerConfig.model_validate(data)
    except ValueError as exc:  # e.g. a model kind that cannot take these inputs
        raise ConfigError(f"the config does not fit {where}: {exc}") from exc
