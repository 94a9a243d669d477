"""On a secure broker (SCRAM over TLS, the ACLs of `kafka_acl`): the joiner reads predictions
and feedback in its group and commits a transaction under its transactional id; inference,
ingestion and the producer write what they must, and nothing else."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient

from shared.kafka.config import consumer_config, producer_config
from shared.kafka.transactions import transact_batch
from shared.settings import KafkaSettings
from tests.helpers import read_all
from tests.integration.test_kafka_security import TOPICS, SecureKafka, _produce
from tests.integration.test_kafka_security import secure as secure  # the module's broker

JOINER_GROUP = "streamlearn-joiner"


def _consume(consumer: Consumer, wanted: set[bytes], rounds: int = 150) -> list[Message]:
    """Read until every key of `wanted` was seen (or `rounds` polls); fail on any error."""
    seen: list[Message] = []
    for _ in range(rounds):
        got = consumer.consume(100, 0.2)
        assert all(m.error() is None for m in got), [m.error() for m in got]
        seen += got
        if wanted <= {m.key() or b"" for m in seen}:
            break
    return seen


def test_the_joiner_reads_both_inputs_and_commits_a_transaction(secure: SecureKafka) -> None:
    joiner = secure.principals["joiner"]
    marker = uuid.uuid4().hex
    prediction, feedback = f"{marker}-p".encode(), f"{marker}-f".encode()
    # Each input written by the principal that writes it in production.
    assert _produce_one(secure.principals["inference"], TOPICS.predictions, prediction) is None
    assert _produce_one(secure.principals["producer"], TOPICS.feedback, feedback) is None
    consumer = Consumer(consumer_config(joiner, JOINER_GROUP, enable_auto_commit=False))
    consumer.subscribe([TOPICS.predictions, TOPICS.feedback])
    try:
        batch = _consume(consumer, {prediction, feedback})
        assert {prediction, feedback} <= {m.key() or b"" for m in batch}
        out = Producer(producer_config(joiner, transactional_id=f"{JOINER_GROUP}-0"))
        out.init_transactions(30)

        def join(msg: Message) -> list[tuple[str, bytes | None, bytes, None]]:
            if msg.key() != feedback:
                return []
            # A training sample, a dead letter and the changelog, all in one transaction.
            return [
                (TOPICS.train, msg.key(), b"sample", None),
                (TOPICS.dlq, msg.key(), b"dead letter", None),
                (TOPICS.joiner_state, msg.key(), b"state", None),
            ]

        assert transact_batch(out, consumer, batch, join) == 3
    finally:
        consumer.close()
    for topic in (TOPICS.train, TOPICS.dlq):
        written = read_all(secure.admin, topic, 1, timeout=20)
        assert feedback in {m.key() for m in written}
    # The joiner restores its state from its changelog: it may read it back.
    restored = Consumer(consumer_config(joiner, f"{JOINER_GROUP}-restore"))
    restored.subscribe([TOPICS.joiner_state])
    try:
        assert feedback in {m.key() for m in _consume(restored, {feedback})}
    finally:
        restored.close()


def test_the_joiner_is_refused_other_transactional_ids_and_topics(secure: SecureKafka) -> None:
    joiner = secure.principals["joiner"]
    foreign = Producer(producer_config(joiner, transactional_id="streamlearn-ingestion-0"))
    with pytest.raises(KafkaException) as refused:
        foreign.init_transactions(30)
    assert refused.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    for topic in (TOPICS.raw, TOPICS.predictions, TOPICS.feedback):
        [denied] = _produce(joiner, topic)
        assert denied is not None and denied.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    config = {k: v for k, v in joiner.client_config().items() if k != "logger"}
    visible = set(AdminClient(config).list_topics(timeout=10).topics)
    assert visible == {
        *(TOPICS.predictions, TOPICS.feedback, TOPICS.streams, TOPICS.joiner_state),
        *(TOPICS.train, TOPICS.dlq),
    }


def test_ingestion_writes_feedback_and_inference_only_its_log(secure: SecureKafka) -> None:
    marker = uuid.uuid4().hex.encode()
    assert _produce_one(secure.principals["ingestion"], TOPICS.feedback, marker) is None
    inference = secure.principals["inference"]
    for topic in (TOPICS.feedback, TOPICS.train):
        [denied] = _produce(inference, topic)
        assert denied is not None and denied.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    [denied] = _produce(secure.principals["producer"], TOPICS.predictions)
    assert denied is not None and denied.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def _produce_one(kafka: KafkaSettings, topic: str, key: bytes) -> KafkaError | None:
    """Write one record keyed `key`; its delivery error (None: written)."""
    errors: list[KafkaError | None] = []
    producer = Producer(producer_config(kafka, linger_ms=0, message_timeout_ms=10_000))
    producer.produce(topic, b"v", key, on_delivery=lambda e, _: errors.append(e))
    producer.flush(20)
    assert len(errors) == 1, "a delivery report never came"
    return errors[0]
