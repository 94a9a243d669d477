"""A secure broker of its own (SASL/SCRAM-SHA-512 over TLS, ACLs) refuses what it must.

One broker for the module, in a temporary directory on free ports; the session's broker of
tests/conftest.py is not touched.
"""

from __future__ import annotations

import asyncio
import json
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from pydantic import SecretStr

from services.ingestion.settings import IngestionSettings
from shared.errors import BrokerError
from shared.kafka.admin import ensure_topics, standard_topics
from shared.kafka.config import consumer_config, producer_config
from shared.kafka.local.broker import LocalBroker
from shared.kafka.local.files import BrokerConfig
from shared.kafka.local.principals import provision
from shared.kafka.local.secure import broker_security
from shared.kafka.transactions import transact_batch
from shared.net import free_port
from shared.security.kafka_acl import acl_table
from shared.settings import DEFAULT_CACHE_DIR, KafkaSettings, TopicSettings
from tests.helpers import read_all

TOPICS = TopicSettings()


@dataclass(frozen=True)
class SecureKafka:
    config: BrokerConfig
    secrets_dir: Path
    admin: KafkaSettings
    principals: dict[str, KafkaSettings]


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    root = tmp_path_factory.mktemp("secure-kafka")
    secrets_dir = root / "secrets"
    config = BrokerConfig(
        state_dir=root / "kafka",
        cache_dir=DEFAULT_CACHE_DIR,
        port=free_port(),
        controller_port=free_port(),
        security=broker_security(secrets_dir),
    )
    broker = LocalBroker(config)
    broker.start()
    try:
        admin = config.client_settings()
        ensure_topics(AdminClient(admin.client_config()), standard_topics(TOPICS))
        principals = provision(admin, secrets_dir, acl_table(TOPICS))
        yield SecureKafka(config, secrets_dir, admin, principals)
    finally:
        broker.stop()


def _produce(kafka: KafkaSettings, topic: str, count: int = 1) -> list[KafkaError | None]:
    """Produce `count` records; the delivery error of each (None: written)."""
    errors: list[KafkaError | None] = []
    producer = Producer(producer_config(kafka, linger_ms=0, message_timeout_ms=10_000))
    for i in range(count):
        producer.produce(
            topic, f"v{i}".encode(), f"k{i}".encode(), on_delivery=lambda e, _: errors.append(e)
        )
    producer.flush(20)
    assert len(errors) == count, "a delivery report never came"
    return errors


def _connection_errors(kafka: KafkaSettings, timeout: float = 15.0) -> set[int]:
    """The error codes a client with `kafka` reports while trying to connect."""
    seen: list[KafkaError] = []
    config = {k: v for k, v in kafka.client_config().items() if k != "logger"}
    producer = Producer(config | {"error_cb": seen.append})
    deadline = time.monotonic() + timeout
    while not seen and time.monotonic() < deadline:
        producer.poll(0.1)
    return {e.code() for e in seen}


def test_a_plain_text_client_is_refused(secure: SecureKafka) -> None:
    plain: dict[str, Any] = {
        "bootstrap.servers": secure.config.bootstrap,
        "security.protocol": "PLAINTEXT",
    }
    with pytest.raises(KafkaException):
        AdminClient(plain).list_topics(timeout=5)
    errors: list[KafkaError | None] = []
    producer = Producer(plain | {"message.timeout.ms": 3000})
    producer.produce(TOPICS.raw, b"v", b"k", on_delivery=lambda e, _: errors.append(e))
    producer.flush(10)
    assert len(errors) == 1 and errors[0] is not None  # never written


def test_a_wrong_password_is_refused(secure: SecureKafka) -> None:
    wrong = secure.principals["producer"].model_copy(
        update={"sasl_password": SecretStr("not-the-password-of-producer")}
    )
    errors = _connection_errors(wrong)
    assert KafkaError._AUTHENTICATION in errors
    assert errors <= {KafkaError._AUTHENTICATION, KafkaError._ALL_BROKERS_DOWN}


def test_the_broker_trusts_only_its_ca(secure: SecureKafka, tmp_path: Path) -> None:
    from shared.security.pki import new_ca

    other = tmp_path / "other-ca.pem"
    other.write_bytes(new_ca().cert)
    untrusting = secure.principals["producer"].model_copy(update={"ssl_ca_location": other})
    # A certificate librdkafka cannot verify fails the handshake, before any SASL exchange.
    errors = _connection_errors(untrusting)
    assert errors & {KafkaError._SSL, KafkaError._TRANSPORT}
    assert KafkaError._AUTHENTICATION not in errors


def test_the_producer_writes_samples_but_not_training_records(secure: SecureKafka) -> None:
    producer = secure.principals["producer"]
    assert _produce(producer, TOPICS.raw, 3) == [None, None, None]
    [denied] = _produce(producer, TOPICS.train)
    assert denied is not None and denied.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_ingestion_routes_raw_into_its_outputs_in_one_transaction(secure: SecureKafka) -> None:
    ingestion = secure.principals["ingestion"]
    group = IngestionSettings().consumer_group
    marker = uuid.uuid4().hex
    producer = Producer(producer_config(secure.principals["producer"], linger_ms=0))
    for i in range(4):
        producer.produce(TOPICS.raw, f"{marker}-{i}".encode(), marker.encode())
    assert producer.flush(20) == 0
    consumer = Consumer(consumer_config(ingestion, group, enable_auto_commit=False))
    consumer.subscribe([TOPICS.raw])
    batch: list[Message] = []
    try:
        for _ in range(150):
            batch += [m for m in consumer.consume(100, 0.2) if m.error() is None]
            if sum(m.key() == marker.encode() for m in batch) == 4:
                break
        ours = [m for m in batch if m.key() == marker.encode()]
        assert len(ours) == 4
        out = Producer(producer_config(ingestion, transactional_id=f"{group}-0"))
        out.init_transactions(30)

        def route(msg: Message) -> list[tuple[str, bytes | None, bytes, None]]:
            ok = msg in ours and int(msg.value().split(b"-")[-1]) % 2 == 0  # type: ignore[union-attr]
            return [(TOPICS.train if ok else TOPICS.dlq, msg.key(), msg.value() or b"", None)]

        assert transact_batch(out, consumer, batch, route) == len(batch)
        last = batch[-1]
        [committed] = consumer.committed([TopicPartition(TOPICS.raw, last.partition() or 0)], 15)
        assert committed.offset > (last.offset() or 0)
    finally:
        consumer.close()
    trained = read_all(secure.admin, TOPICS.train, 2, timeout=20)
    assert sorted(m.value() or b"" for m in trained if m.key() == marker.encode()) == [
        f"{marker}-0".encode(),
        f"{marker}-2".encode(),
    ]


def test_the_trainer_reads_training_records_but_cannot_write_samples(
    secure: SecureKafka,
) -> None:
    trainer = secure.principals["trainer"]
    marker = uuid.uuid4().hex.encode()
    producer = Producer(producer_config(secure.admin, linger_ms=0))
    producer.produce(TOPICS.train, b"x", marker)
    assert producer.flush(20) == 0
    consumer = Consumer(consumer_config(trainer, "streamlearn-trainer-demo"))
    consumer.subscribe([TOPICS.train])
    try:
        seen: list[Message] = []
        for _ in range(150):
            got = consumer.consume(100, 0.2)
            assert all(m.error() is None for m in got), [m.error() for m in got]
            seen += got
            if any(m.key() == marker for m in seen):
                break
        assert any(m.key() == marker for m in seen)
    finally:
        consumer.close()
    [denied] = _produce(trainer, TOPICS.raw)
    assert denied is not None and denied.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_a_consumer_in_another_principals_group_is_denied(secure: SecureKafka) -> None:
    trainer = secure.principals["trainer"]
    consumer = Consumer(consumer_config(trainer, IngestionSettings().consumer_group))
    consumer.subscribe([TOPICS.train])  # a topic it may read, in ingestion's group
    try:
        errors: list[KafkaError] = []
        for _ in range(50):
            try:
                errors += [e for m in consumer.consume(10, 0.2) if (e := m.error()) is not None]
            except KafkaException as exc:
                errors.append(exc.args[0])
            if errors:
                break
    finally:
        consumer.close()
    assert KafkaError.GROUP_AUTHORIZATION_FAILED in {e.code() for e in errors}


def test_only_granted_topics_are_visible(secure: SecureKafka) -> None:
    config = {
        k: v for k, v in secure.principals["producer"].client_config().items() if k != "logger"
    }
    visible = set(AdminClient(config).list_topics(timeout=10).topics)
    # Samples and feedback to write, definitions to read.
    assert visible == {TOPICS.raw, TOPICS.feedback, TOPICS.streams}


def test_the_faust_worker_connects_with_the_same_settings(secure: SecureKafka) -> None:
    from faust.exceptions import ProducerSendError

    from services.ingestion.router import Router
    from services.ingestion.validation import TimeLimits
    from services.ingestion.worker import build_app

    settings = IngestionSettings(kafka=secure.principals["ingestion"])
    router = Router(lambda _n, _t: None, TimeLimits(0, 1), settings.max_message_bytes)
    marker = uuid.uuid4().hex.encode()

    async def send(topic: str) -> None:
        app = build_app(settings, router, threading.Event())  # a stopped producer is spent
        await app.producer.start()
        try:
            await app.producer.send_and_wait(
                topic, marker, b"from-faust", partition=0, timestamp=None, headers=[]
            )
        finally:
            await app.producer.stop()

    asyncio.run(send(TOPICS.dlq))
    written = read_all(secure.admin, TOPICS.dlq, 1, timeout=20)
    assert [m.value() for m in written if m.key() == marker] == [b"from-faust"]
    with pytest.raises(ProducerSendError, match="TopicAuthorizationFailedError"):
        asyncio.run(send(TOPICS.metrics))  # not ingestion's: the ACLs hold for faust too


def test_a_reprovision_is_idempotent_and_narrows_rights(secure: SecureKafka) -> None:
    table = acl_table(TOPICS)
    metrics_only = frozenset(g for g in table["reader"] if "metrics" in g.name)
    narrowed = dict(table) | {"reader": metrics_only}
    again = provision(secure.admin, secure.secrets_dir, narrowed)
    try:
        assert again["reader"].sasl_password == secure.principals["reader"].sasl_password
        config = {k: v for k, v in again["reader"].client_config().items() if k != "logger"}
        assert set(AdminClient(config).list_topics(timeout=10).topics) == {TOPICS.metrics}
    finally:
        provision(secure.admin, secure.secrets_dir, table)


def test_no_secret_is_readable_by_others_or_logged(secure: SecureKafka) -> None:
    properties = secure.config.state_dir / "server.properties"
    private = [properties, *secure.secrets_dir.iterdir()]
    private = [p for p in private if p.name != "ca.pem"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in private), private
    passwords = [secure.admin.sasl_password.get_secret_value()]  # type: ignore[union-attr]
    passwords += [s.sasl_password.get_secret_value() for s in secure.principals.values()]  # type: ignore[union-attr]
    for log in secure.config.logs_dir.iterdir():
        text = log.read_text(errors="replace")
        assert not [p for p in passwords if p in text], log


def test_plain_and_secure_data_directories_are_not_mixed(
    secure: SecureKafka, tmp_path: Path
) -> None:
    formatted = json.loads((secure.config.state_dir / "broker.json").read_text())
    (tmp_path / "was-secure").mkdir()
    (tmp_path / "was-secure" / "broker.json").write_text(json.dumps(formatted))
    plain = BrokerConfig(
        state_dir=tmp_path / "was-secure",
        cache_dir=DEFAULT_CACHE_DIR,
        port=free_port(),
        controller_port=formatted["controller_port"],
    )
    with pytest.raises(BrokerError, match=r"holds a secure .* cannot start as a plain-text"):
        LocalBroker(plain).start()
    (tmp_path / "was-plain").mkdir()
    layout = {"host": "127.0.0.1", "controller_port": secure.config.controller_port}
    (tmp_path / "was-plain" / "broker.json").write_text(json.dumps(layout))
    secure_on_plain = secure.config.model_copy(
        update={"state_dir": tmp_path / "was-plain", "port": free_port()}
    )
    with pytest.raises(BrokerError, match=r"holds a plain-text .* cannot start as a secure"):
        LocalBroker(secure_on_plain).start()
