"""`streamlearn up --secure`: the whole learning loop over TLS, tokens and Kafka SCRAM + ACLs.

The system runs its own secured broker (the session's test broker is plaintext) in a fresh
state directory; clients connect with the `<role>.env` files it writes.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient

from shared.clients.registry import RegistryClient
from shared.errors import PermissionDenied, Unauthenticated, Unavailable
from shared.kafka.config import producer_config
from shared.net import free_port
from shared.settings import GrpcSecurity, KafkaSettings, TopicSettings
from shared.streams import publish_definition
from streamlearn.cli.settings import CliSettings
from streamlearn.client import InferenceClient, SampleProducer, from_env
from streamlearn.client.datasets import Synthetic
from streamlearn.system.control import LocalSystem
from streamlearn.system.secure import USER_ROLES, LocalSecrets
from tests.e2e.system import SERVICES, logistic_config
from tests.helpers import version_numbers, wait_until

FEATURES = 8
DATASET = Synthetic("binary", features=FEATURES, seed=5)
EVENTS = 3000
CLI_EVENTS = 500


@pytest.fixture
def secured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalSystem]:
    """`streamlearn up --secure` on a new state directory and its own broker's free ports."""
    for name in ("STREAMLEARN_KAFKA_BOOTSTRAP", "STREAMLEARN_SECURITY__TLS"):
        monkeypatch.delenv(name, raising=False)
    env = {
        "STREAMLEARN_STATE_DIR": str(tmp_path / "state"),
        "STREAMLEARN_KAFKA_PORT": str(free_port()),
        "STREAMLEARN_KAFKA_CONTROLLER_PORT": str(free_port()),
        "STREAMLEARN_KAFKA_HEAP": "384m",
        "TRAINER_CONFIG": logistic_config(FEATURES),
        "TRAINER_STREAM": "secure",
        "TRAINER_MODEL_NAME": "secure",
        "TRAINER_VERSION_EVERY_S": "0.5",
        "INFERENCE_MODEL_NAMES": json.dumps(["secure"]),
    }
    for service in SERVICES:
        env[f"{service.upper()}_GRPC_PORT"] = str(free_port())
        env[f"{service.upper()}_METRICS_PORT"] = "0"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    local = LocalSystem(CliSettings())
    try:
        local.up(timeout_s=240, secure=True)
        yield local
    finally:
        local.down()


def role_env(secrets: LocalSecrets, role: str) -> dict[str, str]:
    """The variables a `<role>.env` exports."""
    lines = secrets.env_file(role).read_text().splitlines()
    return dict(line.removeprefix("export ").split("=", 1) for line in lines if "=" in line)


def test_the_loop_runs_secured_and_refuses_what_each_role_may_not_do(
    secured: LocalSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = secured.settings.secrets()
    assert secrets is not None
    for role in USER_ROLES:  # a client's file per role, readable by its owner only
        assert stat.S_IMODE(secrets.env_file(role).stat().st_mode) == 0o600
    address = {s.name: s.address for s in secured.plan()}
    admin_kafka = secured.settings.kafka()
    publish_definition(admin_kafka, TopicSettings().streams, DATASET.definition("secure"))

    for name, value in role_env(secrets, "producer").items():  # a program of role producer
        monkeypatch.setenv(name, value)
    producer_side = from_env()
    assert producer_side.kafka.sasl_username == "producer"
    x, y = DATASET.holdout(EVENTS, 1)
    with SampleProducer(kafka=producer_side.kafka, stream="secure") as producer:
        producer.send_columns(x, y, keys=["k"] * EVENTS)
    assert producer.delivered == EVENTS and not producer.failed
    cli = _produce_as(role_env(secrets, "producer"), "--events", str(CLI_EVENTS))
    assert cli.returncode == 0, cli.stderr  # the CLI reads the role's file too

    reader = secrets.client_security("reader")
    with RegistryClient(address["registry"], security=reader) as registry:
        wait_until(lambda: version_numbers(registry, "secure") != [], 180, pause=0.3)
        learned = EVENTS + CLI_EVENTS
        wait_until(
            lambda: registry.get_version("secure").lineage.events_seen == learned, 120, pause=0.3
        )
        with pytest.raises(PermissionDenied):  # a reader does not move aliases
            registry.set_alias("secure", "production", 1)
    with InferenceClient(address["inference"], security=reader) as client:
        wait_until(lambda: client.ready("secure"), 120, pause=0.3)
        scores, _ = client.predict("secure", x[:10])
        assert np.isfinite(scores).all()
    token_only = reader.model_copy(update={"cert_file": None, "key_file": None})
    with InferenceClient(address["inference"], security=token_only) as client:
        assert client.ready("secure")  # clients of inference: a token over TLS suffices
    with (
        RegistryClient(address["registry"], timeout=5, security=token_only) as registry,
        pytest.raises(Unavailable),
    ):
        registry.list_models()  # the registry takes mutual TLS only: no certificate, no call
    for nobody in (None, GrpcSecurity(tls=True, ca_file=secrets.ca_file)):
        with (
            RegistryClient(address["registry"], timeout=5, security=nobody) as anonymous,
            pytest.raises((Unauthenticated, Unavailable)),
        ):
            anonymous.list_models()  # plaintext: no handshake; TLS without a token: refused

    _producer_may_not_write_the_training_topic(producer_side.kafka)
    _plaintext_kafka_is_refused(admin_kafka.bootstrap_servers)
    _no_secret_in_any_log(secrets, secured.settings.state_dir)


def _no_secret_in_any_log(secrets: LocalSecrets, state: Path) -> None:
    """Passwords and tokens stay in their files: not one in a service's or the broker's log."""
    values = [p.read_text().strip() for p in secrets.kafka_dir.glob("*.password")]
    values += [p.read_text().strip() for p in secrets.grpc_dir.glob("token-*")]
    assert len(values) >= 8
    logs = [p for p in state.rglob("*.log*") if p.is_file()]
    assert {p.name for p in logs} >= {f"{s}.log" for s in SERVICES} | {"server.log"}
    for log in logs:
        text = log.read_text(errors="replace")
        leaked = [v[:6] for v in values if v in text]
        assert not leaked, f"{log} holds secrets starting {leaked}"


def _produce_as(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`streamlearn produce binary --stream secure ...` with only `env`'s STREAMLEARN_*."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLEARN_")}
    command = "from streamlearn.cli.main import app; app()"
    return subprocess.run(
        [sys.executable, "-c", command, "produce", "binary", "--stream", "secure", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=kept | env,
        check=False,
    )


def _producer_may_not_write_the_training_topic(kafka: KafkaSettings) -> None:
    producer = Producer(producer_config(kafka))
    errors: list[str] = []
    producer.produce(
        TopicSettings().train, b"forged", on_delivery=lambda err, _: errors.append(str(err))
    )
    producer.flush(30)
    assert errors and "TOPIC_AUTHORIZATION_FAILED" in errors[0]


def _plaintext_kafka_is_refused(bootstrap: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=5)
