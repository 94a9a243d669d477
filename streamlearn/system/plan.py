"""Which processes make up the local system, in start order, and how to reach each one.

Every service keeps its own settings class and env prefix: `streamlearn up` sets only where
state lives and which Kafka to use (plus the registry address the trainer and inference
need); anything else (ports, models, intervals) is read from the caller's environment the
way the service itself reads it, e.g. `INFERENCE_GRPC_PORT=9001 streamlearn up`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from pydantic import BaseModel, SecretStr

# The services' names and settings modules, never their cores: the supervisor and
# `streamlearn status` only start and probe processes (no torch, numba, onnxruntime, faust).
from services.inference.names import SERVICE as INFERENCE_HEALTH
from services.inference.settings import InferenceSettings
from services.ingestion.names import SERVICE as INGESTION_HEALTH
from services.ingestion.settings import IngestionSettings
from services.joiner.names import HEALTH_NAME as JOINER_HEALTH
from services.joiner.settings import JoinerSettings
from services.registry.names import SERVICE as REGISTRY_HEALTH
from services.registry.settings import RegistrySettings
from services.trainer.names import HEALTH_NAME as TRAINER_HEALTH
from services.trainer.settings import TrainerSettings
from shared.settings import GrpcSecurity, KafkaSettings, ServiceSettings
from streamlearn.system.secure import LocalSecrets

# The gRPC health name each service reports SERVING under once it is ready (probes, `up`,
# benchmarks and the Kubernetes manifests all go by this map).
HEALTH_NAMES = {
    "registry": REGISTRY_HEALTH,
    "ingestion": INGESTION_HEALTH,
    "trainer": TRAINER_HEALTH,
    "joiner": JOINER_HEALTH,
    "inference": INFERENCE_HEALTH,
}

# What `streamlearn up` changes from the services' own defaults, unless the caller's
# environment says otherwise: a new version every second keeps the served model fresh.
LOCAL_DEFAULTS = {"TRAINER_VERSION_EVERY_S": "1"}


@dataclass(frozen=True)
class ServiceSpec:
    """One supervised process."""

    name: str
    address: str  # host:port of its gRPC server (health included)
    health_name: str
    env: Mapping[str, str] = field(default_factory=dict)  # always set
    defaults: Mapping[str, str] = field(default_factory=dict)  # unless the caller's env sets it
    consumes: tuple[str, str] | None = None  # (consumer group, topic) whose lag it owns
    # What `up` waits for: inference is SERVING only once a model version is loaded, which
    # needs events first, so the system counts as up when its server answers at all ("").
    up_name: str | None = None
    module: str = ""  # what `python -m` runs; services.<name> unless set
    # How a health probe reaches it: the CA of a secured system (health needs no token).
    probe: GrpcSecurity | None = None

    @property
    def command(self) -> list[str]:
        """The same `python -m services.<name>` a container runs."""
        return [sys.executable, "-m", self.module or f"services.{self.name}"]

    @property
    def up_health(self) -> str:
        """The gRPC health name that means this service has started."""
        return self.health_name if self.up_name is None else self.up_name

    def environment(self, inherited: Mapping[str, str]) -> dict[str, str]:
        """The child's environment: defaults < the caller's environment < what must be set."""
        return {**self.defaults, **inherited, **self.env}


@dataclass(frozen=True)
class Layout:
    """Where the local system keeps its bookkeeping under the state directory."""

    state_dir: Path

    @property
    def run_dir(self) -> Path:
        """Pid and state files."""
        return self.state_dir / "run"

    @property
    def logs_dir(self) -> Path:
        """One log per service (and the supervisor's)."""
        return self.state_dir / "logs"

    @property
    def pid_file(self) -> Path:
        """The supervisor's pid."""
        return self.run_dir / "supervisor.pid"

    @property
    def state_file(self) -> Path:
        """What the supervisor last wrote about its children."""
        return self.run_dir / "system.json"


def local_plan(
    state_dir: Path, kafka: KafkaSettings, secrets: LocalSecrets | None = None
) -> list[ServiceSpec]:
    """Registry, ingestion, trainer, joiner, inference (start order) on loopback.

    With `secrets` (`streamlearn up --secure`), each service serves TLS, checks tokens, and
    reaches Kafka and the registry as its own principal.
    """
    registry = RegistrySettings(state_dir=state_dir, kafka=kafka)
    registry_address = f"127.0.0.1:{registry.grpc_port}"
    ingestion = IngestionSettings(state_dir=state_dir, kafka=kafka)
    trainer = TrainerSettings(state_dir=state_dir, kafka=kafka)
    joiner = JoinerSettings(state_dir=state_dir, kafka=kafka)
    inference = InferenceSettings(state_dir=state_dir, kafka=kafka)
    specs = [
        _spec("registry", registry, {}),
        _spec(
            "ingestion",
            ingestion,
            {},
            (ingestion.consumer_group, ingestion.topics.raw),
        ),
        _spec(
            "trainer",
            trainer,
            {"registry_address": registry_address},
            (trainer.consumer_group, trainer.topics.train),
        ),
        _spec(
            "joiner",
            joiner,
            {},
            (joiner.consumer_group, joiner.topics.predictions),
        ),
        replace(
            _spec("inference", inference, {"registry_address": registry_address}),
            up_name="",
        ),
    ]
    return specs if secrets is None else [_secured(s, secrets, kafka) for s in specs]


def _secured(spec: ServiceSpec, secrets: LocalSecrets, kafka: KafkaSettings) -> ServiceSpec:
    """`spec` serving TLS with tokens checked, on Kafka as its own SCRAM principal.

    The credentials travel in the child's environment (readable by its owner only, as the
    secrets directory is); they are never logged.
    """
    prefix = f"{spec.name.upper()}_"
    own = secrets.kafka(spec.name, kafka.bootstrap_servers)
    grpc = secrets.server_security(spec.name)
    env = dict(spec.env)
    # The client id stays the service's own (its logs and the broker's quotas name it).
    env |= _variables(f"{prefix}KAFKA__", own, skip=frozenset({"client_id"}))
    env |= _variables(f"{prefix}SECURITY__", grpc)
    return replace(spec, env=env, probe=secrets.client_security())


def _variables(
    prefix: str, settings: BaseModel, skip: frozenset[str] | set[str] = frozenset()
) -> dict[str, str]:
    """The environment that sets every field of `settings` that is set: none forgotten."""
    env = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is not None and name not in skip:
            text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
            env[f"{prefix}{name.upper()}"] = text
    return env


def _spec(
    name: str,
    settings: ServiceSettings,
    extra: Mapping[str, str],
    consumes: tuple[str, str] | None = None,
) -> ServiceSpec:
    prefix = f"{name.upper()}_"
    env = {
        f"{prefix}STATE_DIR": str(settings.state_dir),
        f"{prefix}KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
    }
    env |= {f"{prefix}{key.upper()}": value for key, value in extra.items()}
    defaults = {k: v for k, v in LOCAL_DEFAULTS.items() if k.startswith(prefix)}
    port = getattr(settings, "grpc_port")  # noqa: B009 - every service here has one
    return ServiceSpec(name, f"127.0.0.1:{port}", HEALTH_NAMES[name], env, defaults, consumes)
