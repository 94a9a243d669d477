"""The confluent-kafka engine: raw topic in, training and dead-letter topics out (adapter).

One thread runs a consume -> route -> produce loop over batches of raw records (up to
`TAKE_MAX` per `consume`), so the per-record cost is the router's plus two librdkafka calls.
The guarantees are those of the faust worker (`worker`), which stays selectable with
`INGESTION_ENGINE=faust`:

- Exactly once in effect. Outputs are produced by an idempotent producer (acks=all) that
  reports failed deliveries only (`delivery.report.only.error`: no Python call per record).
  Every `INGESTION_COMMIT_INTERVAL_S`, at a revocation and at a stop, the producer is flushed
  and only then are the raw offsets of the routed records committed: a committed offset
  never passes a record whose outputs are not all acknowledged. What a crash leaves
  uncommitted is redelivered, and the partition's memory, rebuilt from the outputs when the
  partition is prepared (`recovery`), skips every input that was already routed.
- A refused output stops the engine: nothing more is committed, the process exits with
  status 1 (`app.run`), and the raw records are redelivered after the restart.
- A raw partition is prepared on its first record after each assignment, in a background
  thread while the others go on: the partition is paused and the consumer seeks back to that
  record, its outputs must have the partition (`topology.require_partition`), the producer's
  metadata must list it and its memory is recovered. When that fails the partition stays
  paused (held) and is tried again with backoff (`holding.Holds`), with an error log and the
  metrics `streamlearn_ingestion_unroutable_partition{partition}` /
  `_recovery_failures_total`. A partition revoked meanwhile is forgotten (a preparation that
  finishes late is ignored), so neither a rebalance nor a stop waits on one.
- Outputs keep the raw partition, and records of a partition are routed in offset order.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from services.ingestion import metrics
from services.ingestion.dedup import PartitionMemory
from services.ingestion.fastpath import BatchRouter, Incoming
from services.ingestion.holding import Holds
from services.ingestion.recovery import recover
from services.ingestion.router import Router
from services.ingestion.settings import IngestionSettings
from services.ingestion.topology import require_partition
from shared.errors import Unavailable
from shared.kafka.config import consumer_config, producer_config

log = logging.getLogger(__name__)
TAKE_MAX, POLL_S = 2000, 0.1
RETRY_FIRST_S, RETRY_MAX_S = 0.5, 30.0
HOUSEKEEPING_S = 5.0
FLUSH_S = 60.0  # how long a commit waits for the outputs before the engine gives up


def output_producer_config(settings: IngestionSettings) -> dict[str, Any]:
    """The producer of the outputs: idempotent, acks=all, reporting failed deliveries only.

    Sized for throughput (linger, batch) and to write records of the one size limit.
    """
    return producer_config(
        settings.kafka,
        message_max_bytes=settings.max_message_bytes,
        linger_ms=20,
        batch_size=1024 * 1024,
        batch_num_messages=100_000,
        queue_buffering_max_messages=1_000_000,
        queue_buffering_max_kbytes=1024 * 1024,
        delivery_report_only_error=True,
        topic_metadata_refresh_interval_ms=int(settings.metadata_max_age_s * 1000),
    )


def raw_consumer_config(settings: IngestionSettings) -> dict[str, Any]:
    """The raw consumer: the ingestion group, offsets committed only by the engine."""
    return consumer_config(
        settings.kafka,
        settings.consumer_group,
        enable_auto_commit=False,
        session_timeout_ms=int(settings.session_timeout_s * 1000),
        topic_metadata_refresh_interval_ms=int(settings.metadata_max_age_s * 1000),
        # Larger fetches per partition than the default (1 MiB): the loop takes thousands of
        # records per call. The prefetch queue keeps librdkafka's bound (64 MiB).
        max_partition_fetch_bytes=max(16 * 1024 * 1024, settings.max_message_bytes * 2),
    )


class Engine:
    """Routes the raw topic until `stop` is set or an output is refused (`failure`)."""

    def __init__(
        self,
        settings: IngestionSettings,
        router: Router,
        stop: threading.Event,
        on_failure: list[BaseException],
    ) -> None:
        """Build the clients; nothing connects before `run`."""
        self._settings = settings
        self._batches = BatchRouter(router)
        self._stop = stop
        self._failures = on_failure
        topics = settings.topics
        self._raw, self._train, self._dlq = topics.raw, topics.train, topics.dlq
        self._producer = Producer(output_producer_config(settings) | {"on_delivery": self._report})
        self._consumer = Consumer(raw_consumer_config(settings))
        self._admin: AdminClient | None = None
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ingest-prepare")
        self._memories: dict[int, PartitionMemory] = {}
        self._next: dict[int, int] = {}  # routed, not yet committed: next offset per partition
        self._positions: dict[int, int] = {}  # next offset to route, per partition (for lag)
        self._preparing: dict[int, tuple[int, Future[PartitionMemory]]] = {}
        self._waiting: dict[int, int] = {}  # paused partitions: the offset to resume from
        self._generation: Counter[int] = Counter()  # per partition, bumped when revoked
        self._holds: Holds[Any] = Holds(RETRY_FIRST_S, RETRY_MAX_S)
        self._undelivered: list[str] = []
        self._commit_at = self._housekeeping_at = 0.0

    def run(self) -> None:
        """Consume, route and commit until stopped; commits what was routed on a clean stop."""
        self._consumer.subscribe(
            [self._raw], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost
        )
        try:
            while not self._stop.is_set() and not self._failures:
                self._step()
            if not self._failures:
                self._commit()
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._consumer.close()  # revokes: _revoked commits unless a delivery failed
            self._producer.flush(FLUSH_S)

    def _step(self) -> None:
        messages = self._consumer.consume(TAKE_MAX, POLL_S)
        if messages:
            self._route(messages)
        self._producer.poll(0)
        self._finish_preparations()
        self._retry_held()
        now = time.monotonic()
        if now >= self._commit_at:
            self._commit()
            self._commit_at = now + self._settings.commit_interval_s
        if now >= self._housekeeping_at:
            self._housekeeping()
            self._housekeeping_at = now + HOUSEKEEPING_S

    def _route(self, messages: list[Message]) -> None:
        """Route a consumed batch: per partition, in offset order, then produce the outputs."""
        started = time.perf_counter()
        groups: dict[int, list[Message]] = {}
        for msg in messages:
            if msg.error() is not None:
                self._consumer_error(msg.error())  # type: ignore[arg-type]
                continue
            groups.setdefault(msg.partition(), []).append(msg)  # type: ignore[arg-type]
        accepted: Counter[str] = Counter()
        rejected: Counter[str] = Counter()
        skipped = routed = 0
        produce, train, dlq = self._produce, self._train, self._dlq
        for partition, batch in groups.items():
            memory = self._memories.get(partition)
            if memory is None:
                if partition not in self._waiting:
                    self._start_preparing(partition, batch[0].offset())  # type: ignore[arg-type]
                continue  # refetched from its first offset once the partition is prepared
            routing = self._batches.route(_incoming(self._raw, partition, batch), memory)
            accepted.update(routing.accepted)
            for outputs in routing.routed:
                if isinstance(outputs, tuple):  # an accepted sample: (key, value, headers)
                    produce(train, outputs[1], outputs[0], partition, outputs[2])
                    continue
                if not outputs:
                    skipped += 1
                for out in outputs:
                    if out.rejection is None:
                        produce(train, out.value, out.key, partition, out.headers)
                        accepted[out.stream or "-"] += out.rows
                    else:
                        produce(dlq, out.value, out.key, partition, out.headers)
                        rejected[out.rejection.reason.value] += out.rows
            routed += len(batch)
            self._next[partition] = self._positions[partition] = batch[-1].offset() + 1  # type: ignore[operator]
        if routed:
            metrics.LATENCY.observe((time.perf_counter() - started) / routed)
        metrics.tally(accepted, rejected, skipped)

    def _produce(
        self, topic: str, value: bytes, key: bytes | None, partition: int, headers: Any
    ) -> None:
        while True:
            try:
                self._producer.produce(topic, value, key, partition, headers=headers)
                return
            except BufferError:  # the local queue is full: let deliveries drain
                self._producer.poll(0.05)
            except KafkaException as exc:  # refused at once: a failed delivery
                self._undelivered.append(f"{topic}[{partition}]: {exc}")
                return

    def _report(self, error: KafkaError | None, msg: Message) -> None:
        """Librdkafka's delivery report, called for failed deliveries only."""
        if error is not None:
            self._undelivered.append(f"{msg.topic()}[{msg.partition()}]: {error.str()}")

    def _commit(self) -> None:
        """Flush the outputs, then commit the raw offsets routed since the last commit."""
        remaining = self._producer.flush(FLUSH_S)
        if self._undelivered or remaining:
            why = "; ".join(self._undelivered[:3]) or f"{remaining} still queued"
            self._fail(Unavailable(f"{len(self._undelivered) or remaining} output(s): {why}"))
            return
        if not self._next:
            return
        offsets = [TopicPartition(self._raw, p, o) for p, o in self._next.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:  # a rebalance: redelivered, and skipped by the memory
            log.warning("committing raw offsets failed", extra={"error": str(exc)})
            return
        self._next.clear()

    def _fail(self, error: BaseException) -> None:
        """Stop without committing: the records not committed are redelivered after a restart."""
        if not self._failures:
            log.critical(
                "an output was not written: stopping so its raw record is redelivered",
                exc_info=error,
            )
            self._failures.append(error)

    def _consumer_error(self, error: KafkaError) -> None:
        if error.fatal():
            raise KafkaException(error)
        if error.code() != KafkaError._PARTITION_EOF:
            log.warning("consumer error", extra={"error": error.str()})

    # Partitions: preparation, holding, revocation.

    def _start_preparing(self, partition: int, offset: int) -> None:
        """Pause `partition` at `offset` and prepare it in the background."""
        tp = TopicPartition(self._raw, partition, offset)
        self._consumer.pause([tp])
        self._consumer.seek(tp)
        self._waiting[partition] = offset
        self._submit(partition)

    def _submit(self, partition: int) -> None:
        self._producer.flush(FLUSH_S)  # our own outputs must be readable by the recovery
        future = self._executor.submit(self._prepare, partition)
        self._preparing[partition] = (self._generation[partition], future)

    def _prepare(self, partition: int) -> PartitionMemory:
        """Make `partition` routable: outputs have it, the producer knows it, memory recovered."""
        settings, topics = self._settings, self._settings.topics
        self._admin = self._admin or AdminClient(settings.kafka.client_config())
        outputs = (topics.train, topics.dlq)
        require_partition(self._admin, topics.raw, outputs, partition, settings.grow_outputs)
        self._know_partition(partition)
        return recover(
            settings.kafka,
            settings.consumer_group,
            (topics.train, topics.dlq),
            (topics.raw, partition),
            settings.dedup_window_s,
            settings.dedup_max_ids,
        )

    def _know_partition(self, partition: int) -> None:
        """The producer's metadata must list `partition` of both outputs (refreshed here).

        Raises:
            Unavailable: an output still lacks it in the producer's metadata.

        """
        for topic in (self._train, self._dlq):
            known = self._producer.list_topics(topic, timeout=15).topics[topic].partitions
            if partition not in known:
                raise Unavailable(f"the producer does not know partition {partition} of {topic}")

    def _finish_preparations(self) -> None:
        for partition, (generation, future) in list(self._preparing.items()):
            if not future.done():
                continue
            del self._preparing[partition]
            if generation != self._generation[partition]:
                continue  # revoked since: its next owner prepares it
            error = future.exception()
            if error is not None:
                self._hold(partition, error)
                continue
            self._memories[partition] = future.result()
            self._holds.release(partition)
            metrics.UNROUTABLE.labels(str(partition)).set(0)
            offset = self._waiting.pop(partition)
            log.info("routing raw partition", extra={"partition": partition, "offset": offset})
            self._consumer.resume([TopicPartition(self._raw, partition)])

    def _hold(self, partition: int, error: BaseException) -> None:
        delay = self._holds.failed(partition)
        metrics.UNROUTABLE.labels(str(partition)).set(1)
        metrics.RECOVERY_FAILURES.inc()
        log.error(
            "cannot route raw partition yet: holding its records, retrying",
            extra={"partition": partition, "error": str(error), "retry_s": delay},
        )

    def _retry_held(self) -> None:
        for partition in self._holds.due():
            if partition not in self._preparing and partition in self._waiting:
                self._submit(partition)

    def _assigned(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        log.info("raw partitions assigned", extra={"partitions": [p.partition for p in partitions]})

    def _revoked(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Commit what was routed (unless an output failed), then forget the partitions."""
        if not self._failures:
            self._commit()
        self._forget(partitions)

    def _lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        """Partitions lost (the session expired): their new owner routes them; nothing to commit."""
        self._forget(partitions)

    def _forget(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            p = tp.partition
            self._memories.pop(p, None)
            self._next.pop(p, None)
            self._positions.pop(p, None)
            self._waiting.pop(p, None)
            self._preparing.pop(p, None)
            self._holds.forget(p)
            self._generation[p] += 1

    def _housekeeping(self) -> None:
        now = time.time()
        for partition, memory in list(self._memories.items()):
            memory.forget_before(now)
            label = str(partition)
            metrics.DEDUP_IDS.labels(label).set(len(memory))
            metrics.DEDUP_CUT_SHORT.labels(label).set(memory.cut_short)
            position = self._positions.get(partition)
            if position is None:
                continue
            tp = TopicPartition(self._raw, partition)
            _, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if high is not None and high >= 0:
                metrics.LAG.labels(label).set(max(high - position, 0))


def _incoming(topic: str, partition: int, batch: list[Message]) -> Incoming:
    return Incoming(
        topic,
        partition,
        [m.offset() for m in batch],  # type: ignore[misc]
        [m.key() for m in batch],
        [m.value() for m in batch],  # None: a tombstone, dead-lettered as such
        [m.headers() for m in batch],  # type: ignore[misc]
        [m.timestamp()[1] / 1000 for m in batch],
    )
