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
    assert [s.name for s in specs] == ["registry", "ingestion", "trainer", "joiner", "inference"]
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


def test_demo_feedback_hands_the_prediction_log_to_the_supervisor_as_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`demo --feedback` sets no variable of its own process; the caller's settings win."""
    import json
    import os
    import subprocess

    from services.trainer.settings import TrainerSettings
    from streamlearn.cli.demo import _prediction_log
    from streamlearn.cli.settings import CliSettings
    from streamlearn.system.control import LocalSystem

    trainer = TrainerSettings(state_dir=tmp_path)
    defaults = _prediction_log(trainer)
    assert json.loads(defaults["INFERENCE_LOG_PREDICTIONS"]) == [trainer.model_name]
    streams = json.loads(defaults["INFERENCE_PREDICTION_LOG_STREAMS"])
    assert streams == {trainer.model_name: trainer.stream}
    spawned: list[dict[str, str]] = []
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: spawned.append(k["env"]))
    monkeypatch.setattr(LocalSystem, "supervisor_pid", lambda self: 4242 if spawned else None)
    monkeypatch.setenv("INFERENCE_PREDICTION_LOG_STREAMS", '{"demo": "mine"}')
    monkeypatch.delenv("INFERENCE_LOG_PREDICTIONS", raising=False)
    LocalSystem(CliSettings(state_dir=tmp_path))._spawn_supervisor(defaults)
    [env] = spawned
    assert env["INFERENCE_LOG_PREDICTIONS"] == defaults["INFERENCE_LOG_PREDICTIONS"]
    assert env["INFERENCE_PREDICTION_LOG_STREAMS"] == '{"demo": "mine"}'  # the caller's wins
    assert env["PATH"] == os.environ["PATH"]  # the rest of the caller's environment
    assert "INFERENCE_LOG_PREDICTIONS" not in os.environ  # the demo's process is untouched


def test_fresh_empties_only_the_sample_topics() -> None:
    topics = TopicSettings()
    names = {s.name for s in demo_state.sample_topics(topics)}
    assert names == {topics.raw, topics.train, topics.dlq, topics.metrics}
    assert topics.streams not in names  # stream definitions stay
    assert topics.model_events not in names  # the registry's history stays


# --- `streamlearn status` with nothing running: from pid files alone --------------------------


def _collected(state: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    from streamlearn.cli.settings import CliSettings
    from streamlearn.system.control import LocalSystem
    from streamlearn.system.status import collect

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    found = collect(LocalSystem(CliSettings()))
    for service in found["services"]:
        service["address"] = None  # `stopped` does not read the services' settings
    return found


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"STREAMLEARN_KAFKA_PORT": "9999"},
        {"streamlearn_kafka_port": "9998"},  # names match regardless of case
        {"STREAMLEARN_KAFKA_BOOTSTRAP": "broker.example:9092"},
    ],
)
def test_stopped_says_what_collect_says_when_nothing_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    from streamlearn.system.status import stopped

    env = {"STREAMLEARN_STATE_DIR": str(tmp_path), **env}
    assert stopped(env) == _collected(tmp_path, env, monkeypatch)


def test_stopped_leaves_a_doubtful_setting_to_the_real_settings(tmp_path: Path) -> None:
    from streamlearn.system.status import stopped

    for port in ("not-a-port", "0", "70000", "\uff11\uff12"):
        assert (
            stopped({"STREAMLEARN_STATE_DIR": str(tmp_path), "STREAMLEARN_KAFKA_PORT": port})
            is None
        )


def test_stopped_steps_aside_while_a_supervisor_or_the_local_broker_runs(tmp_path: Path) -> None:
    import subprocess
    import sys

    from streamlearn.system.plan import Layout
    from streamlearn.system.status import SUPERVISOR_MODULE, stopped, supervisor_pid_file

    env = {"STREAMLEARN_STATE_DIR": str(tmp_path)}
    assert stopped(env) is not None
    for pid_file, marker in (
        (supervisor_pid_file(tmp_path), SUPERVISOR_MODULE),
        (tmp_path / "kafka" / "broker.pid", "kafka.Kafka"),
    ):
        # A process whose command line carries the marker, as the real one's does.
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])
        try:
            pid_file.parent.mkdir(parents=True, exist_ok=True)
            pid_file.write_text(str(child.pid))
            assert stopped(env) is None
        finally:
            child.kill()
            child.wait()
        assert stopped(env) is not None  # and a stale pid file no longer counts
    assert supervisor_pid_file(tmp_path) == Layout(tmp_path).pid_file


def test_stopped_restates_the_settings_and_the_plan_faithfully(tmp_path: Path) -> None:
    from shared.settings import DEFAULT_STATE_DIR
    from streamlearn.cli.settings import CliSettings
    from streamlearn.system import status

    assert status.DEFAULT_STATE_DIR == DEFAULT_STATE_DIR
    assert CliSettings.model_fields["kafka_port"].default == status.DEFAULT_KAFKA_PORT
    assert CliSettings.model_config["env_prefix"].lower() == status.ENV_PREFIX
    assert tuple(s.name for s in local_plan(tmp_path, KAFKA)) == status.SERVICES


def test_not_running_is_said_in_two_plain_lines(tmp_path: Path) -> None:
    from streamlearn.cli.system import not_running
    from streamlearn.system.status import stopped

    found = stopped({"STREAMLEARN_STATE_DIR": str(tmp_path), "STREAMLEARN_KAFKA_PORT": "9555"})
    assert found is not None
    assert not_running(found).splitlines() == [
        "kafka stopped at 127.0.0.1:9555",
        "streamlearn is not running: start it with `streamlearn up`",
    ]


# --- drift as the trainer reports it, on status and the demo dashboard ------------------------


def _trainer(**metrics: float) -> Any:
    from streamlearn.v1 import metrics_pb2

    return metrics_pb2.TrainerMetrics(
        model="m", events_applied=12_000, events_skipped=7, metrics={"logloss": 0.3, **metrics}
    )


def test_drift_keys_the_trainer_does_not_send_count_as_zero() -> None:
    from streamlearn.system.status import drift_fields, drift_text, trainer_entry

    assert drift_fields({"logloss": 0.3}) == {
        "drifts": 0,
        "last_drift_event": 0,
        "diverging": 0,
        "new_categories": 0,
    }
    assert drift_text(drift_fields({})) == ""
    assert trainer_entry(None) is None
    assert trainer_entry(_trainer(drifts=2.0, last_drift_event=9_500.0, new_categories=4.0)) == {
        "events_applied": 12_000,
        "events_skipped": 7,
        "drifts": 2,
        "last_drift_event": 9_500,
        "diverging": 0,
        "new_categories": 4,
    }


@pytest.mark.parametrize(
    ("metrics", "text"),
    [
        ({"drifts": 1.0, "last_drift_event": 9_500.0}, "1 drift (last at event 9,500)"),
        ({"drifts": 3.0}, "3 drifts"),
        ({"diverging": 1_200.0}, "1,200 diverging events skipped"),
        (
            {"drifts": 2.0, "last_drift_event": 10_001.0, "diverging": 5.0},
            "2 drifts (last at event 10,001), 5 diverging events skipped",
        ),
    ],
)
def test_drift_is_one_line_of_counts_and_where(metrics: dict[str, float], text: str) -> None:
    from streamlearn.system.status import drift_fields, drift_text
    from streamlearn.system.summary import trainer_drift

    assert drift_text(drift_fields(metrics)) == text
    assert trainer_drift(_trainer(**metrics)) == text


def test_status_shows_each_models_training_and_drift() -> None:
    from streamlearn.cli.system import trainer_cells
    from streamlearn.system.status import trainer_entry
    from streamlearn.system.summary import trainer_drift

    assert trainer_cells(None) == ("-", "-")
    assert trainer_cells(trainer_entry(_trainer())) == ("12,000 (skipped 7)", "none")
    assert trainer_cells(trainer_entry(_trainer(drifts=1.0, last_drift_event=40.0))) == (
        "12,000 (skipped 7)",
        "1 drift (last at event 40)",
    )
    assert trainer_drift(_trainer()) == "none detected"


def test_the_dashboard_and_the_summary_show_drift() -> None:
    from types import SimpleNamespace

    from rich.console import Console

    from streamlearn.system.summary import DemoResult, dashboard, summary
    from streamlearn.system.watch import Snapshot

    trainer = _trainer(drifts=1.0, last_drift_event=5_000.0, diverging=3.0)
    result = DemoResult(duration_s=60, drift_after_s=30, trainer=trainer)
    feed: Any = SimpleNamespace(sent=0, drifted=False)  # what the dashboard reads of a Feed
    console = Console(record=True, width=200)
    console.print(dashboard(Snapshot(trainer=trainer), feed, time.monotonic(), result))
    console.print(summary(result))
    lines = [line for line in console.export_text().splitlines() if "drift " in line]
    assert len(lines) == 2
    assert all(
        "1 drift (last at event 5,000), 3 diverging events skipped" in line for line in lines
    )


def test_the_newest_metrics_of_each_model_win() -> None:
    from streamlearn.system.watch import newest_per_model
    from streamlearn.v1 import metrics_pb2

    def at(model: str, second: int, applied: int) -> metrics_pb2.TrainerMetrics:
        m = metrics_pb2.TrainerMetrics(model=model, events_applied=applied)
        m.time.seconds = second
        return m

    found = newest_per_model([at("a", 5, 50), at("b", 1, 10), at("a", 3, 30), at("b", 2, 20)])
    assert {k: v.events_applied for k, v in found.items()} == {"a": 50, "b": 20}
