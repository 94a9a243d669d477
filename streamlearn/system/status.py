"""`streamlearn status`: each service's health, address, restarts and lag; models and versions."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import Consumer, KafkaException

from shared.clients.registry import RegistryClient
from shared.errors import StreamlearnError
from shared.grpc.probe import check
from shared.kafka.config import consumer_config
from shared.kafka.consumer import group_lag
from shared.kafka.local.broker import LocalBroker
from shared.settings import KafkaSettings
from streamlearn.system.control import LocalSystem
from streamlearn.system.plan import ServiceSpec
from streamlearn.system.supervisor import read_state


def collect(system: LocalSystem) -> dict[str, Any]:
    """Everything `status` shows, as plain data (what `--json` prints)."""
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
        "models": _models(specs) if supervisor else [],
    }


def _kafka(system: LocalSystem) -> dict[str, Any]:
    settings = system.settings
    if settings.kafka_bootstrap:
        return {"bootstrap": settings.kafka_bootstrap, "state": "running", "local": False}
    status = LocalBroker(settings.broker_config()).status()
    return {"bootstrap": status.bootstrap, "state": status.state, "pid": status.pid, "local": True}


def _service(
    spec: ServiceSpec, known: dict[str, Any] | None, kafka: KafkaSettings | None
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": spec.name,
        "address": spec.address,
        "state": known["state"] if known else "stopped",
        "pid": known["pid"] if known else None,
        "restarts": known["restarts"] if known else 0,
        "uptime_s": round(time.time() - known["since"], 1) if known and known["pid"] else None,
        "log": known["log"] if known else None,
        "healthy": bool(known) and check(spec.address, spec.health_name, timeout=1.0),
        # Its server answers (inference does before its first version is loaded).
        "answering": bool(known) and check(spec.address, "", timeout=1.0),
        "lag": None,
    }
    if spec.consumes and kafka is not None and known:
        entry["lag"] = _lag(kafka, *spec.consumes)
    return entry


def _lag(kafka: KafkaSettings, group: str, topic: str) -> int | None:
    consumer = Consumer(consumer_config(kafka, group))
    try:
        return group_lag(consumer, topic)
    except KafkaException:  # a status line, not a failure: the lag is unknown
        return None
    finally:
        consumer.close()


def _models(specs: list[ServiceSpec]) -> list[dict[str, Any]]:
    # numpy comes with the inference client: loaded only when a system runs.
    from streamlearn.client.inference import InferenceClient

    address = {s.name: s.address for s in specs}
    try:
        with RegistryClient(address["registry"], timeout=2.0) as registry:
            models = registry.list_models()
    except StreamlearnError:
        return []
    try:
        with InferenceClient(address["inference"], timeout=2.0) as inference:
            served = inference.served()
    except StreamlearnError:  # inference down: nothing is served
        served = {}
    return [
        {
            "name": m.name,
            "latest_version": m.latest_version,
            "aliases": dict(m.aliases),
            "served_version": served.get(m.name),
        }
        for m in models
    ]
