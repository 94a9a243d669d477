"""The joiner on Kafka: consume-transform-produce in transactions, exactly once in effect.

One thread consumes the prediction-log and feedback topics (co-partitioned by event id, read
`read_committed`), feeds partition p of both to joiner p (`core.Joiner`) and writes what
comes out, in transactions:

- Each transaction holds the outputs (samples to the training topic, dead letters), the
  changelog entries of the state they leave (`Joiner.changes`, to the compacted state topic,
  partition p) and the consumed offsets (`send_offsets_to_transaction`). Either all become
  visible or none: a record is joined once, its state and its offset move together.
- It commits every `commit_interval_ms`, before partitions are revoked and when stopping.
- On assignment, joiner p is restored from changelog partition p (read `read_committed` to
  its end), so it continues from exactly the committed offsets. The range assignor keeps
  partition p of both inputs on one member.
- The transactional id is stable per instance: `init_transactions` at start fences a
  predecessor and aborts the transaction it left open.
- A Kafka error inside a transaction (fatal, abortable, or a commit that keeps failing)
  aborts it when it can and stops the worker with `JoinerFailed`: the process exits with
  status 1 and its successor restores the committed state; nothing uncommitted is visible.
  Lost partitions (the session expired) stop it the same way.
- Undecodable inputs go to the dead letters with the decoder's reason and never stop a
  partition; samples whose label their stream refuses (or of no defined stream) too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from services.joiner import exposition
from services.joiner.changelog import CLOCK_KEY, ChangelogError
from services.joiner.core import Joiner
from services.joiner.definitions import policy_of
from services.joiner.metrics import JoinMetrics
from services.joiner.outputs import Output
from services.joiner.policy import StreamPolicy
from services.joiner.records import Record, Source, Topics, records_of, undecodable, within
from services.joiner.restore import read_changelog
from services.joiner.settings import JoinerSettings
from shared import samples
from shared.errors import ConfigError, StreamlearnError
from shared.feedback import FeedbackProblem, decode_feedback, decode_prediction
from shared.kafka.config import consumer_config, producer_config
from shared.streams import StreamCatalog
from streamlearn.v1 import stream_pb2

log = logging.getLogger(__name__)
TAKE_MAX = 1000
TXN_TIMEOUT_S = 30.0
COMMIT_ATTEMPTS = 5


class JoinerFailed(StreamlearnError):
    """A transaction could not be committed: the process exits, its successor restores."""


class Worker:
    """Joins the input topics until `stop` is set (see the module docstring)."""

    def __init__(
        self,
        settings: JoinerSettings,
        catalog: StreamCatalog,
        stop: threading.Event,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Build the clients; `start` connects."""
        self._settings = settings
        topics = settings.topics
        self._inputs = (topics.predictions, topics.feedback)
        self._topics = Topics(topics.train, topics.dlq)
        self._state_topic = topics.joiner_state
        self._catalog = catalog
        self._stop = stop
        self._clock = clock
        self._producer = Producer(
            producer_config(
                settings.kafka,
                transactional_id=settings.transactional_id,
                transaction_timeout_ms=settings.transaction_timeout_ms,
                message_max_bytes=settings.max_message_bytes,
            )
        )
        self._consumer = Consumer(
            consumer_config(
                settings.kafka,
                settings.consumer_group,
                enable_auto_commit=False,
                partition_assignment_strategy="range",
                # Static membership: a restarted instance takes its partitions back at once
                # instead of waiting out the dead member's session.
                group_instance_id=settings.transactional_id,
                session_timeout_ms=settings.session_timeout_ms,
            )
        )
        self._joiners: dict[int, Joiner] = {}
        self._offsets: dict[tuple[str, int], int] = {}  # consumed, not committed: next offset
        self._in_transaction = False
        self._failure: BaseException | None = None
        self._default = settings.default_policy()
        self._policies: dict[str, StreamPolicy] = {}
        self._revisions: tuple[tuple[str, int], ...] | None = None
        self._tick_at = self._commit_at = 0.0

    def metrics(self) -> dict[int, JoinMetrics]:
        """Each held partition's counters (read by the Prometheus collector's thread)."""
        return {p: j.metrics for p, j in dict(self._joiners).items()}

    def start(self) -> None:
        """Fence any predecessor (aborting its open transaction) and subscribe."""
        self._producer.init_transactions(TXN_TIMEOUT_S)
        self._refresh_policies()
        self._consumer.subscribe(
            list(self._inputs),
            on_assign=self._assigned,
            on_revoke=self._revoked,
            on_lost=self._lost,
        )

    def run(self) -> None:
        """Join until stopped, then commit what was joined and close.

        Raises:
            JoinerFailed: A transaction failed (see the module docstring); exit status 1.

        """
        try:
            while not self._stop.is_set():
                self._step()
            self._commit()
        except KafkaException as exc:
            self._fail(exc)
        finally:
            try:
                self._consumer.close()  # revokes: `_revoked` commits unless failed
            except (KafkaException, RuntimeError) as exc:
                self._fail(exc)
            self._producer.flush(10)
        if self._failure is not None:
            raise JoinerFailed(f"transaction failed: {self._failure}") from self._failure

    def _step(self) -> None:
        tick_s = self._settings.clock_tick_ms / 1000
        messages = self._consumer.consume(TAKE_MAX, min(tick_s, 0.1))
        self._raise_failure()
        now_ms = int(self._clock() * 1000)
        for msg in messages:
            self._take(msg, now_ms)
        monotonic = time.monotonic()
        if monotonic >= self._tick_at:
            self._tick_at = monotonic + tick_s
            self._refresh_policies()
            for _, joiner in sorted(self._joiners.items()):
                self._emit(records_of(joiner.advance(now_ms), self._topics, self._lookup, None))
        if monotonic >= self._commit_at:
            self._commit_at = monotonic + self._settings.commit_interval_ms / 1000
            self._commit()

    def _take(self, msg: Message, now_ms: int) -> None:
        error = msg.error()
        if error is not None:
            if error.fatal():
                raise KafkaException(error)
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error", extra={"error": error.str()})
            return
        topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
        joiner = self._joiners.get(partition)
        if joiner is None:  # not restored (an assignment being undone): read again later
            return
        source = Source(topic, partition, offset)
        value = msg.value()
        try:
            records = self._records(joiner, topic, value, now_ms, source)
        except FeedbackProblem as problem:  # no valid record: dead-lettered, never stops
            headers = samples.headers_of(msg)
            records = [undecodable(value, msg.key(), headers, problem, self._topics, source)]
        if records is None:  # no value at all
            headers = samples.headers_of(msg)
            records = [undecodable(value, msg.key(), headers, None, self._topics, source)]
        self._emit(records)
        self._offsets[(topic, partition)] = offset + 1

    def _records(
        self, joiner: Joiner, topic: str, value: bytes | None, now_ms: int, source: Source
    ) -> list[Record] | None:
        """The records of one input; None when it has no value (a tombstone, empty bytes)."""
        if not value:
            return None
        return records_of(
            self._join(joiner, topic, value, now_ms), self._topics, self._lookup, source
        )

    def _join(self, joiner: Joiner, topic: str, value: bytes, now_ms: int) -> list[Output]:
        if topic == self._inputs[0]:
            return joiner.on_prediction(decode_prediction(value), now_ms)
        return joiner.on_feedback(decode_feedback(value), now_ms)

    def _lookup(self, stream: str) -> stream_pb2.StreamDefinition | None:
        return self._catalog.get(stream)

    def _emit(self, records: list[Record]) -> None:
        for whole in records:
            record = within(whole, self._topics, self._settings.max_message_bytes)
            self._produce(record.topic, record.key, record.value, -1, record.headers)
            if record.reason is None:
                exposition.SAMPLES.labels(record.stream or "-").inc()
            else:
                exposition.DEAD_LETTERS.labels(record.reason).inc()

    def _produce(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int, headers: Any
    ) -> None:
        self._begin()
        while True:
            try:
                self._producer.produce(topic, value, key, partition, headers=headers)
                return
            except BufferError:  # the local queue is full: let deliveries drain
                self._producer.poll(0.05)

    def _begin(self) -> None:
        if not self._in_transaction:
            self._producer.begin_transaction()
            self._in_transaction = True

    def _commit(self) -> None:
        """Write the changelog entries and offsets, and commit the transaction.

        A transaction that would hold nothing but a moved clock is skipped: a restored
        clock that is a little behind closes the same windows at the next step (the clock
        is wall time, ahead of any restored watermark).
        """
        changes = {p: j.changes() for p, j in sorted(self._joiners.items())}
        only_clock = all(key == CLOCK_KEY for entries in changes.values() for key, _ in entries)
        if not self._in_transaction and not self._offsets and only_clock:
            return
        for partition, entries in changes.items():
            for key, value in entries:
                self._produce(self._state_topic, key, value, partition, None)
        self._begin()
        if self._offsets:
            offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(self._offsets.items())]
            self._producer.send_offsets_to_transaction(
                offsets, self._consumer.consumer_group_metadata(), TXN_TIMEOUT_S
            )
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                self._producer.commit_transaction(TXN_TIMEOUT_S)
                break
            except KafkaException as exc:
                if not exc.args[0].retriable() or attempt == COMMIT_ATTEMPTS:
                    raise
        self._in_transaction = False
        self._offsets.clear()
        exposition.TRANSACTIONS.inc()

    def _fail(self, error: BaseException) -> None:
        """Abort the open transaction when it can be; the worker stops (see `run`)."""
        if self._failure is None:
            log.critical(
                "transaction failed: stopping, state is restored on restart", exc_info=error
            )
            self._failure = error
        if self._in_transaction:
            try:
                self._producer.abort_transaction(TXN_TIMEOUT_S)
            except KafkaException as exc:  # fatal: the broker aborts it at the timeout
                log.warning("abort failed", extra={"error": str(exc)})
            self._in_transaction = False

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise JoinerFailed(f"transaction failed: {self._failure}") from self._failure

    # Partitions: restore on assignment, commit on revocation.

    def _assigned(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Restore the new partitions' joiners; a failure stops the worker (exit 1)."""
        try:
            self._restore(sorted({tp.partition for tp in partitions} - set(self._joiners)))
        except (KafkaException, StreamlearnError) as exc:
            self._fail(exc)

    def _restore(self, partitions: list[int]) -> None:
        if not partitions:
            return
        started = time.monotonic()
        kafka, topic = self._settings.kafka, self._state_topic
        for partition, records in read_changelog(kafka, topic, partitions).items():
            joiner = Joiner.from_changelog(
                records, self._policies, self._default, on_error=self._bad_entry
            )
            self._joiners[partition] = joiner
            log.info(
                "partition restored",
                extra={
                    "partition": partition,
                    "changelog_records": len(records),
                    "pending": joiner.pending(),
                    "seconds": round(time.monotonic() - started, 3),
                },
            )

    def _bad_entry(self, error: ChangelogError) -> None:
        exposition.CHANGELOG_ERRORS.inc()
        log.error("changelog record left out of the restore", extra={"error": str(error)})

    def _revoked(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Commit what was joined (unless failed), then drop the partitions' joiners."""
        if self._failure is None:
            try:
                self._commit()
            except KafkaException as exc:
                self._fail(exc)
        for tp in partitions:
            self._joiners.pop(tp.partition, None)
            self._offsets.pop((tp.topic, tp.partition), None)

    def _lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Partitions taken away unannounced: the uncommitted state is no longer ours."""
        self._fail(JoinerFailed(f"partitions lost: {[tp.partition for tp in partitions]}"))
        for tp in partitions:
            self._joiners.pop(tp.partition, None)

    # Stream definitions: per-stream policies.

    def _refresh_policies(self) -> None:
        definitions = self._catalog.all()
        revisions = tuple((d.name, d.revision) for d in definitions)
        if revisions == self._revisions:
            return
        self._revisions = revisions
        policies = {}
        for definition in definitions:
            try:
                policies[definition.name] = policy_of(definition, self._default)
            except ConfigError as exc:
                log.error(
                    "stream join policy refused: using the default",
                    extra={"stream": definition.name, "error": str(exc)},
                )
        self._policies = policies
        for joiner in self._joiners.values():
            joiner.set_policies(policies, self._default)
