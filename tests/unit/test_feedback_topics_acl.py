"""The topics and Kafka ACLs of learning from production traffic (predictions, feedback,
the joiner's changelog) and the `joiner` principal."""

from __future__ import annotations

import pytest

from shared.kafka.admin import standard_topics
from shared.security.kafka_acl import AccessNames, Grant, Operation, Resource, acl_table, allowed
from shared.settings import TopicSettings

TOPICS = TopicSettings()
READ, WRITE, DESCRIBE = Operation.READ, Operation.WRITE, Operation.DESCRIBE
TOPIC, GROUP, TXN = Resource.TOPIC, Resource.GROUP, Resource.TRANSACTIONAL_ID


def test_predictions_feedback_and_the_changelog_are_co_partitioned() -> None:
    topics = TopicSettings(partitions=7, retention_ms=1000, replication_factor=2)
    specs = {s.name: s for s in standard_topics(topics)}
    names = (topics.predictions, topics.feedback, topics.joiner_state)
    assert {specs[n].partitions for n in names} == {7}
    assert {specs[n].replication_factor for n in names} == {2}
    assert specs[topics.predictions].config == {"retention.ms": "1000"}
    assert specs[topics.feedback].config == {"retention.ms": "1000"}
    # State is kept per key for as long as the joiner needs it: compacted, no retention.
    assert specs[topics.joiner_state].config == {"cleanup.policy": "compact"}


def test_every_topic_setting_is_a_standard_topic() -> None:
    names = {v for k, v in TOPICS.model_dump().items() if isinstance(v, str)}
    specs = standard_topics(TOPICS)
    assert {s.name for s in specs} == names
    assert len(specs) == len(names)  # none listed twice


def test_the_joiner_has_exactly_its_grants() -> None:
    table = acl_table(TOPICS)
    assert table["joiner"] == {
        Grant(TOPIC, TOPICS.predictions, READ),
        Grant(TOPIC, TOPICS.feedback, READ),
        Grant(TOPIC, TOPICS.streams, READ),
        Grant(TOPIC, TOPICS.train, WRITE),
        Grant(TOPIC, TOPICS.dlq, WRITE),
        Grant(TOPIC, TOPICS.joiner_state, READ),
        Grant(TOPIC, TOPICS.joiner_state, WRITE),
        Grant(GROUP, "streamlearn-joiner", READ, prefixed=True),
        Grant(GROUP, "streamlearn-catalog-", READ, prefixed=True),
        Grant(TXN, "streamlearn-joiner", WRITE, prefixed=True),
    }


def test_the_joiner_may_join_transact_and_nothing_else() -> None:
    table = acl_table(TOPICS)
    for op in (READ, DESCRIBE):  # READ implies DESCRIBE (committed offsets, describe group)
        assert allowed(table, "joiner", GROUP, "streamlearn-joiner", op)
        assert allowed(table, "joiner", GROUP, "streamlearn-joiner-ctr", op)
    for op in (WRITE, DESCRIBE):  # init, add partitions/offsets, commit; describe
        assert allowed(table, "joiner", TXN, "streamlearn-joiner-0", op)
    assert not allowed(table, "joiner", TXN, "streamlearn-ingestion-0", WRITE)
    assert not allowed(table, "joiner", GROUP, "streamlearn-ingestion", READ)
    for topic in (TOPICS.raw, TOPICS.metrics, TOPICS.model_events, TOPICS.predictions):
        assert not allowed(table, "joiner", TOPIC, topic, WRITE)
    for topic in (TOPICS.train, TOPICS.dlq, TOPICS.raw):
        assert not allowed(table, "joiner", TOPIC, topic, READ)
    assert not allowed(table, "joiner", TOPIC, TOPICS.feedback, WRITE)


@pytest.mark.parametrize(
    ("principal", "topic", "operation", "expected"),
    [
        ("inference", TOPICS.predictions, WRITE, True),
        ("inference", TOPICS.predictions, READ, False),
        ("inference", TOPICS.feedback, WRITE, False),
        ("ingestion", TOPICS.feedback, WRITE, True),
        ("producer", TOPICS.feedback, WRITE, True),
        ("producer", TOPICS.predictions, WRITE, False),
        ("reader", TOPICS.feedback, READ, False),
        ("trainer", TOPICS.predictions, READ, False),
        ("registry", TOPICS.joiner_state, DESCRIBE, False),
    ],
)
def test_who_touches_the_feedback_topics(
    principal: str, topic: str, operation: Operation, expected: bool
) -> None:
    assert allowed(acl_table(TOPICS), principal, TOPIC, topic, operation) is expected


def test_the_joiner_grants_follow_renamed_topics_and_prefixes() -> None:
    topics = TopicSettings(predictions="acme.p", feedback="acme.f", joiner_state="acme.s")
    names = AccessNames(joiner_group_prefix="acme-join", joiner_transactional_prefix="acme-tx")
    table = acl_table(topics, names)
    assert allowed(table, "joiner", TOPIC, "acme.p", READ)
    assert allowed(table, "joiner", TOPIC, "acme.s", WRITE)
    assert allowed(table, "inference", TOPIC, "acme.p", WRITE)
    assert allowed(table, "producer", TOPIC, "acme.f", WRITE)
    assert not allowed(table, "joiner", TOPIC, TOPICS.predictions, READ)
    assert allowed(table, "joiner", GROUP, "acme-join-1", READ)
    assert allowed(table, "joiner", TXN, "acme-tx-1", WRITE)
    assert not allowed(table, "joiner", TXN, "streamlearn-joiner-1", WRITE)
