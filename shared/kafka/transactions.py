"""Exactly-once consume-transform-produce with Kafka transactions."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from confluent_kafka import Consumer, KafkaException, Message, Producer

from shared.kafka.consumer import next_offsets

log = logging.getLogger(__name__)

# What a transform returns for one input record: (topic, key, value, headers) tuples.
Output = tuple[str, bytes | None, bytes, list[tuple[str, str | bytes | None]] | None]


def transact_batch(
    producer: Producer,
    consumer: Consumer,
    batch: list[Message],
    transform: Callable[[Message], Iterable[Output]],
    attempts: int = 5,
    timeout: float = 30.0,
) -> int:
    """Produce the outputs of `batch` and commit its input offsets in one transaction.

    Either every output and the consumer's progress become visible together, or none do.
    An aborted attempt is redone from the same in-memory batch, so nothing is lost or doubled.
    The producer must have been created with a `transactional.id` and `init_transactions()`.

    Returns:
        The number of records produced.

    Raises:
        KafkaException: A fatal error, or `attempts` retriable failures in a row.

    """
    for attempt in range(1, attempts + 1):
        producer.begin_transaction()
        try:
            produced = _produce_outputs(producer, batch, transform)
            producer.send_offsets_to_transaction(
                next_offsets(batch), consumer.consumer_group_metadata(), timeout
            )
            _commit(producer, timeout, attempts)
            return produced
        except KafkaException as exc:
            error = exc.args[0]
            if error.fatal() or attempt == attempts:
                raise
            if error.txn_requires_abort():
                producer.abort_transaction(timeout)
            log.warning("transaction retried", extra={"attempt": attempt, "error": error.str()})
    raise AssertionError("unreachable")  # the loop returns or raises


def _produce_outputs(
    producer: Producer, batch: list[Message], transform: Callable[[Message], Iterable[Output]]
) -> int:
    produced = 0
    for msg in batch:
        for topic, key, value, headers in transform(msg):
            producer.produce(topic, value, key, headers=headers)
            producer.poll(0)
            produced += 1
    return produced


def _commit(producer: Producer, timeout: float, attempts: int) -> None:
    """Commit, retrying the commit alone while the error says it is retriable."""
    for attempt in range(1, attempts + 1):
        try:
            producer.commit_transaction(timeout)
            return
        except KafkaException as exc:
            if not exc.args[0].retriable() or attempt == attempts:
                raise
