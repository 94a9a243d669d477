"""`streamlearn status`: each service's health, address, restarts and lag; models and versions.

Two ways in. `stopped()` answers from pid files alone when nothing runs, without gRPC,
Kafka, numpy or pydantic-settings, so that answer comes at once. `collect()` asks the live
services and the broker, importing their clients only then.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.kafka.local import process

if TYPE_CHECKING:
    from shared.settings import KafkaSettings
    from streamlearn.system.control import LocalSystem
    from streamlearn.system.plan import ServiceSpec
    from streamlearn.v1 import metrics_pb2

SUPERVISOR_MODULE = "streamlearn.system"  # the marker in the supervisor's command line
# local_plan's order (tested)
SERVICES = ("registry", "ingestion", "trainer", "joiner", "inference")
# CliSettings' defaults, restated so that `stopped()` needs no pydantic (tested equal).
DEFAULT_STATE_DIR = Path.home() / ".local" / "state" / "streamlearn"
DEFAULT_KAFKA_PORT = 9092
ENV_PREFIX = "streamlearn_"


# --- nothing runs: from files alone --------------------------------------------------------


@dataclass(frozen=True)
class _Where:
    """The few CLI settings `stopped()` needs, read from the environment as CliSettings does."""

    state_dir: Path
    kafka_bootstrap: str | None
    kafka_port: int

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> _Where | None:
        """None when a value needs the real settings to judge (they then report it)."""
        # pydantic-settings matches variable names without regard to case.
        found = {k.lower(): v for k, v in env.items() if k.lower().startswith(ENV_PREFIX)}
        port = found.get(f"{ENV_PREFIX}kafka_port", str(DEFAULT_KAFKA_PORT)).strip()
        if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
            return None
        state_dir = found.get(f"{ENV_PREFIX}state_dir")
        return cls(
            Path(state_dir) if state_dir is not None else DEFAULT_STATE_DIR,
            found.get(f"{ENV_PREFIX}kafka_bootstrap"),
            int(port),
        )

    def kafka(self) -> dict[str, Any] | None:
        """The broker entry; None while the local broker's process runs (it must be asked)."""
        if self.kafka_bootstrap:
            return {"bootstrap": self.kafka_bootstrap, "state": "running", "local": False}
        if process.read_pid(self.state_dir / "kafka" / "broker.pid", "kafka.Kafka") is not None:
            return None
        bootstrap = f"127.0.0.1:{self.kafka_port}"
        return {"bootstrap": bootstrap, "state": "stopped", "pid": None, "local": True}


def supervisor_pid_file(state_dir: Path) -> Path:
    """Where the supervisor writes its pid (Layout.pid_file, without importing the plan)."""
    return state_dir / "run" / "supervisor.pid"


def stopped(env: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """What `collect` would say when neither the supervisor nor the local broker runs.

    Read from pid files alone. A stopped service has no address ("address" is None).

    Returns:
        The status, or None when something runs (or a setting needs checking): then ask
        `collect`.

    """
    where = _Where.from_env(os.environ if env is None else env)
    if where is None:
        return None
    if process.read_pid(supervisor_pid_file(where.state_dir), SUPERVISOR_MODULE) is not None:
        return None
    kafka = where.kafka()
    if kafka is None:
        return None
    return {
        "supervisor": {"pid": None, "phase": "stopped"},
        "kafka": kafka,
        "services": [_stopped_service(name) for name in SERVICES],
        "models": [],
    }


def _stopped_service(name: str, address: str | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "address": address,
        "state": "stopped",
        "pid": None,
        "restarts": 0,
        "uptime_s": None,
        "log": None,
        "healthy": False,
        "answering": False,
        "lag": None,
    }


# --- drift, as the trainer reports it in TrainerMetrics.metrics ------------------------------

DRIFT_KEYS = ("drifts", "last_drift_event", "diverging", "new_categories")


def drift_fields(metrics: Mapping[str, float]) -> dict[str, int]:
    """The trainer's drift counters from its metrics map; a key it does not send counts 0.

    drifts: concept drifts detected; last_drift_event: the event count at the last one;
    diverging: events skipped because their update diverged; new_categories: categories first seen.
    """
    return {key: int(metrics.get(key, 0)) for key in DRIFT_KEYS}


def drift_text(fields: Mapping[str, int]) -> str:
    """One line: drifts and where the last one was, diverging events skipped ("" if none)."""
    parts = []
    if fields.get("drifts", 0):
        last = fields.get("last_drift_event", 0)
        where = f" (last at event {last:,})" if last else ""
        parts.append(f"{fields['drifts']:,} drift{'s' if fields['drifts'] != 1 else ''}{where}")
    if fields.get("diverging", 0):
        parts.append(f"{fields['diverging']:,} diverging events skipped")
    return ", ".join(parts)


def trainer_entry(metrics: metrics_pb2.TrainerMetrics | None) -> dict[str, Any] | None:
    """A model's trainer figures for `status` (None: no metrics read)."""
    if metrics is None:
        return None
    return {
        "events_applied": metrics.events_applied,
        "events_skipped": metrics.events_skipped,
        **drift_fields(metrics.metrics),
    }


# --- something runs: ask it ---------------------------------------------------------------


def collect(system: LocalSystem) -> dict[str, Any]:
    """Everything `status` shows, as plain data (what `--json` prints)."""
    from streamlearn.system.supervisor import read_state

    specs = system.plan()
    supervisor = system.supervisor_pid()
    state = read_state(system.layout.state_file) if supervisor else None
    known = {s["name"]: s for s in (state or {}).get("services", [])}
    kafka = _kafka(system)
    reachable = system.settings.kafka() if kafka["state"] == "running" else None
    services = [_service(spec, known.get(spec.name), reachable) for spec in specs]
    return {
        "supervisor": {"pid": supervisor, "phase": (state or {}).get("phase", "stopped")},
        "kafka": kafka,
        "services": services,
        "models": _models(system, specs, reachable) if supervisor else [],
    }


def _kafka(system: LocalSystem) -> dict[str, Any]:
    from shared.kafka.local.broker import LocalBroker

    settings = system.settings
    if settings.kafka_bootstrap:
        return {"bootstrap": settings.kafka_bootstrap, "state": "running", "local": False}
    status = LocalBroker(settings.broker_config()).status()
    return {"bootstrap": status.bootstrap, "state": status.state, "pid": status.pid, "local": True}


def _service(
    spec: ServiceSpec, known: dict[str, Any] | None, kafka: KafkaSettings | None
) -> dict[str, Any]:
    if not known:
        return _stopped_service(spec.name, spec.address)
    from shared.grpc.probe import check

    entry: dict[str, Any] = {
        "name": spec.name,
        "address": spec.address,
        "state": known["state"],
        "pid": known["pid"],
        "restarts": known["restarts"],
        "uptime_s": round(time.time() - known["since"], 1) if known["pid"] else None,
        "log": known["log"],
        "healthy": check(spec.address, spec.health_name, timeout=1.0, security=spec.probe),
        # Its server answers (inference does before its first version is loaded).
        "answering": check(spec.address, "", timeout=1.0, security=spec.probe),
        "lag": None,
    }
    if spec.consumes and kafka is not None:
        entry["lag"] = _lag(kafka, *spec.consumes)
    return entry


def _lag(kafka: KafkaSettings, group: str, topic: str) -> int | None:
    from confluent_kafka import Consumer, KafkaException

    from shared.kafka.config import consumer_config
    from shared.kafka.consumer import group_lag

    consumer = Consumer(consumer_config(kafka, group))
    try:
        return group_lag(consumer, topic)
    except KafkaException:  # a status line, not a failure: the lag is unknown
        return None
    finally:
        consumer.close()


def _models(
    system: LocalSystem, specs: list[ServiceSpec], kafka: KafkaSettings | None
) -> list[dict[str, Any]]:
    # numpy comes with the inference client: loaded only when a system runs.
    from shared.clients.registry import RegistryClient
    from shared.errors import StreamlearnError
    from streamlearn.client.inference import InferenceClient

    address = {s.name: s.address for s in specs}
    security = system.settings.grpc_security()
    try:
        with RegistryClient(address["registry"], timeout=2.0, security=security) as registry:
            models = registry.list_models()
    except StreamlearnError:
        return []
    try:
        with InferenceClient(address["inference"], timeout=2.0, security=security) as inference:
            served = inference.served()
    except StreamlearnError:  # inference down: nothing is served
        served = {}
    trainers = _trainer_metrics(system, kafka) if models and kafka is not None else {}
    return [
        {
            "name": m.name,
            "latest_version": m.latest_version,
            "aliases": dict(m.aliases),
            "served_version": served.get(m.name),
            "trainer": trainer_entry(trainers.get(m.name)),
        }
        for m in models
    ]


def _trainer_metrics(
    system: LocalSystem, kafka: KafkaSettings
) -> dict[str, metrics_pb2.TrainerMetrics]:
    """The newest TrainerMetrics of each model on the trainer's metrics topic."""
    from services.trainer.settings import TrainerSettings
    from streamlearn.system.watch import latest_trainer_metrics

    topic = TrainerSettings(state_dir=system.settings.state_dir, kafka=kafka).topics.metrics
    return latest_trainer_metrics(kafka, topic)
