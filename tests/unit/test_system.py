"""The local system's plan and supervisor, without a broker: ports, env, restarts, stop."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from shared.errors import NotFound
from shared.net import free_port
from shared.settings import KafkaSettings, TopicSettings
from streamlearn.system import demo_state
from streamlearn.system.plan import ServiceSpec, local_plan
from streamlearn.system.supervisor import Supervisor, read_state
from streamlearn.v1 import registry_pb2
from tests.helpers import wait_until

KAFKA = KafkaSettings(bootstrap_servers="broker:1234")


def test_plan_starts_the_registry_first_and_follows_each_service_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFERENCE_GRPC_PORT", "9001")
    monkeypatch.setenv("REGISTRY_GRPC_PORT", "6000")
    specs = local_plan(tmp_path, KAFKA)
    assert [s.name for s in specs] == ["registry", "ingestion", "trainer", "inference"]
    by_name = {s.name: s for s in specs}
    assert by_name["inference"].address == "127.0.0.1:9001"
    assert by_name["ingestion"].address == "127.0.0.1:50051"  # the service's own default
    assert by_name["trainer"].address == "127.0.0.1:50053"
    for spec in specs:
        prefix = spec.name.upper()
        assert spec.env[f"{prefix}_STATE_DIR"] == str(tmp_path)
        assert spec.env[f"{prefix}_KAFKA__BOOTSTRAP_SERVERS"] == "broker:1234"
        assert spec.command[1:] == ["-m", f"services.{spec.name}"]
    assert by_name["trainer"].env["TRAINER_REGISTRY_ADDRESS"] == "127.0.0.1:6000"
    assert by_name["inference"].env["INFERENCE_REGISTRY_ADDRESS"] == "127.0.0.1:6000"
    # Inference is SERVING only with a model loaded; `up` waits for its server to answer.
    assert by_name["inference"].up_health == ""
    assert by_name["registry"].up_health == "streamlearn.v1.ModelRegistry"
    assert by_name["trainer"].consumes == ("streamlearn-trainer-demo", "streamlearn.samples.train")
    assert by_name["ingestion"].consumes == ("streamlearn-ingestion", "streamlearn.samples.raw")


def test_local_defaults_yield_to_the_callers_environment(tmp_path: Path) -> None:
    trainer = next(s for s in local_plan(tmp_path, KAFKA) if s.name == "trainer")
    assert trainer.environment({})["TRAINER_VERSION_EVERY_S"] == "1"
    mine = trainer.environment({"TRAINER_VERSION_EVERY_S": "7", "TRAINER_STATE_DIR": "/else"})
    assert mine["TRAINER_VERSION_EVERY_S"] == "7"
    assert mine["TRAINER_STATE_DIR"] == str(tmp_path)  # where state lives is the system's


def test_a_child_that_dies_is_restarted_and_every_child_stops_at_the_end(
    tmp_path: Path,
) -> None:
    flaky = tmp_path / "flaky.py"
    flaky.write_text("import sys; sys.exit(3)\n")
    sleeper = tmp_path / "sleeper.py"
    sleeper.write_text(
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
        "time.sleep(600)\n"
    )
    address = f"127.0.0.1:{free_port()}"  # nothing answers: readiness times out quickly
    specs = [
        ServiceSpec("steady", address, "x", module="sleeper", env={"PYTHONPATH": str(tmp_path)}),
        ServiceSpec("flaky", address, "x", module="flaky", env={"PYTHONPATH": str(tmp_path)}),
    ]
    state = tmp_path / "system.json"
    supervisor = Supervisor(specs, state, tmp_path / "logs", ready_timeout_s=0.5)
    stop = threading.Event()
    runner = threading.Thread(target=supervisor.run, args=(stop,))
    runner.start()
    try:
        wait_until(lambda: _child(state, "flaky")["restarts"] >= 2, 20, pause=0.1)
        flaky_state, steady = _child(state, "flaky"), _child(state, "steady")
        assert flaky_state["last_exit"] == 3
        assert steady["restarts"] == 0 and steady["state"] == "running" and steady["pid"]
    finally:
        stop.set()
        runner.join(30)
    final = read_state(state)
    assert final is not None and final["phase"] == "stopped"
    assert all(s["pid"] is None for s in final["services"])
    assert (tmp_path / "logs" / "flaky.log").exists()


def test_backoff_grows_between_quick_failures(tmp_path: Path) -> None:
    flaky = tmp_path / "flaky.py"
    flaky.write_text("import sys; sys.exit(1)\n")
    spec = ServiceSpec(
        "flaky", f"127.0.0.1:{free_port()}", "x", module="flaky", env={"PYTHONPATH": str(tmp_path)}
    )
    state = tmp_path / "system.json"
    supervisor = Supervisor([spec], state, tmp_path / "logs", ready_timeout_s=0.2)
    stop = threading.Event()
    runner = threading.Thread(target=supervisor.run, args=(stop,))
    runner.start()
    started = time.monotonic()
    try:
        wait_until(lambda: _child(state, "flaky")["restarts"] >= 3, 30, pause=0.05)
    finally:
        stop.set()
        runner.join(30)
    # Waits of 1, 2 and 4 seconds before the first three restarts.
    assert time.monotonic() - started >= 1 + 2 + 4 - 0.5


def _child(state: Path, name: str) -> dict[str, Any]:
    loaded = read_state(state) or {"services": []}  # None until the first write
    return next((s for s in loaded["services"] if s["name"] == name), {"restarts": 0})


class _Registry:
    """Stands in for RegistryClient in `demo_state.describe`."""

    def __init__(self, latest: registry_pb2.ModelVersion | None) -> None:
        self._latest = latest

    def __call__(self, *_: object, **__: object) -> _Registry:
        return self

    def __enter__(self) -> _Registry:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def get_version(self, _model: str) -> registry_pb2.ModelVersion:
        if self._latest is None:
            raise NotFound("no versions")
        return self._latest


def test_the_demo_says_what_it_continues_or_that_it_starts_fresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    latest = registry_pb2.ModelVersion(
        version=171, lineage=registry_pb2.Lineage(events_seen=440_000)
    )
    monkeypatch.setattr(demo_state, "RegistryClient", _Registry(latest))
    assert demo_state.describe("x:1", "demo", resumes=True).startswith(
        "continuing `demo` from v171, 440,000 events learned"
    )
    assert demo_state.describe("x:1", "demo", resumes=False).startswith(
        "starting `demo` fresh from a clean model (its registry versions continue after v171)"
    )
    monkeypatch.setattr(demo_state, "RegistryClient", _Registry(None))
    assert demo_state.describe("x:1", "demo", resumes=False) == (
        "starting `demo` fresh: no version registered yet"
    )


def test_fresh_empties_only_the_sample_topics() -> None:
    topics = TopicSettings()
    names = {s.name for s in demo_state.sample_topics(topics)}
    assert names == {topics.raw, topics.train, topics.dlq, topics.metrics}
    assert topics.streams not in names  # stream definitions stay
    assert topics.model_events not in names  # the registry's history stays
