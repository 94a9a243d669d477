"""The trainer's Kafka loop: consume, decode, learn, checkpoint with offsets, publish.

Offsets live in the checkpoint beside the weights; on (re)assignment every partition is
positioned from the checkpoint, so a crash neither loses nor repeats an event. Kafka's
committed offsets follow the checkpoints and only serve monitoring (lag).

Records fetched before the latest (re)assignment of their partition are dropped: that
assignment re-positioned the partition at the checkpoint, so they will be read again. A
fatal consumer error (e.g. fenced by another instance with the same static membership id)
stops the trainer without writing the checkpoint, which the other instance now owns; so does
finding another trainer of the model in the group at the first assignment (`single.py`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import Counter, Gauge

from services.trainer import checkpoint
from services.trainer.batching import Batcher, StreamFilter, partition_key
from services.trainer.decode import PinnedStream, decode_for
from services.trainer.export import OnnxExporter
from services.trainer.learner import Batch, Learner
from services.trainer.learning import Exporter, Learning
from services.trainer.progress import Every, Positions
from services.trainer.versions import VersionPublisher
from shared.errors import ConfigError, Conflict, StreamlearnError
from shared.kafka.consumer import consume_stamped, where
from streamlearn.v1 import metrics_pb2

log = logging.getLogger(__name__)

APPLIED = Counter("streamlearn_trainer_events_applied_total", "Events learned from")
SKIPPED = Counter("streamlearn_trainer_events_skipped_total", "Events refused by the guard")
METRIC = Gauge("streamlearn_trainer_prequential", "Prequential metric", ["metric"])
OTHER_STREAM = Counter(
    "streamlearn_trainer_records_skipped_stream",
    "Records of streams this trainer does not learn, skipped",
    ["stream"],
)
CONSUMER_ERRORS = Counter(
    "streamlearn_trainer_consumer_errors", "Non-fatal consumer error events", ["error"]
)
MISSING = Counter(
    "streamlearn_trainer_features_missing_total",
    "Named records learned without a value of this feature (imputed)",
    ["field"],
)
NEW_CATEGORIES = Counter(
    "streamlearn_trainer_new_categories_total", "Hashed categories seen for the first time"
)
DIVERGING = Counter("streamlearn_trainer_diverging_total", "Events the learner found diverging")
DRIFTS = Counter("streamlearn_trainer_drifts_total", "Concept drifts detected")
LAST_DRIFT = Gauge("streamlearn_trainer_last_drift_event", "Event at which the last drift was seen")
# The learner's own counters, as the metrics topic names them.
LEARNER_COUNTERS = ("drifts", "last_drift_event", "diverging", "new_categories")
# One log line per error name at most this often: a broker outage repeats them per fetch.
ERROR_LOG_EVERY_S = 30.0
# After the first record of a fetch, wait this long for more: a trainer catching up keeps
# taking large batches, while a trickle is learned (and published) without delay.
LINGER_S = 0.01


class ConsumerFatal(StreamlearnError):
    """The consumer hit a fatal error (e.g. fenced): this instance must stop at once."""


class TrainerLoop:
    """One trainer: a learner fed by a consumer, checkpointed, publishing versions."""

    def __init__(
        self,
        learner: Learning,
        consumer: Consumer,
        topic: str,
        checkpoint_path: Path,
        publisher: VersionPublisher | None,
        metrics_producer: Producer | None = None,
        metrics_topic: str = "",
        *,
        checkpoint_every: Every,
        version_every: Every,
        fetch: int = 1000,
        streams: Collection[str],
        alone: Callable[[], None] | None = None,
        pinned: PinnedStream | None = None,
    ) -> None:
        """Restore from the checkpoint at `checkpoint_path`, if any.

        `alone`, called at the first assignment, raises Conflict when another trainer of the
        model is in the group (`single.py`): this one then stops without checkpointing.
        `pinned`: the stream's definition, whose schema featurizes named records (none:
        positional records only).
        """
        self.learner = learner
        if pinned is None:  # nothing pinned: positional records only
            assert isinstance(learner, Learner)  # other learners come with their stream
            pinned = PinnedStream(next(iter(streams), ""), learner.config)
        self.pinned = pinned
        self.positions = Positions()
        self._consumer = consumer
        self._topic = topic
        self._path = checkpoint_path
        self._publisher = publisher
        self._metrics_producer = metrics_producer
        self._metrics_topic = metrics_topic
        self._checkpoint_every = checkpoint_every
        self._version_every = version_every
        self._fetch = fetch
        skipped = StreamFilter(streams, lambda stream, n: OTHER_STREAM.labels(stream).inc(n))
        self._batcher = Batcher(learner.config.batch_size, skipped)
        # Assignment generations: `_epoch` counts (re)assignments and revocations, and each
        # assigned partition remembers the epoch it was last (re)assigned at.
        self._epoch = 0
        self._assigned: dict[str, int] = {}
        self._fatal: str | None = None  # set by a fatal consumer error: never checkpoint again
        self._alone = alone  # checked once, at the first assignment
        self._error_logged: dict[str, tuple[float, int]] = {}  # name -> (last logged, since)
        self._observed = _Observed(learner)
        self._restore()

    def run(self, stop: threading.Event) -> None:
        """Learn until `stop`; a final checkpoint is written on the way out."""
        self._consumer.subscribe(
            [self._topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        try:
            while not stop.is_set():
                records = self._current(self._fetch_stamped())
                if records:
                    self._learn(records)
                self._housekeeping()
        except ConfigError as exc:
            # The model does not fit the stream's schema found late: the restart builds the
            # model that fits, and must not find a checkpoint of this one (another config).
            self._fatal = str(exc)
            raise
        finally:
            self.save()
            self._close()

    def save(self) -> None:
        """Checkpoint weights, optimizer, metrics and next offsets together.

        Never after a fatal consumer error: a fenced instance's checkpoint would overwrite
        the one the instance that replaced it is writing.
        """
        if self._fatal is not None:
            log.error("checkpoint not written after a fatal error", extra={"error": self._fatal})
            return
        checkpoint.save(
            self._path,
            {
                "learner": self.learner.state(),
                "positions": self.positions.as_dict(),
                "config_hash": self.learner.config.hash(),
                "last_version": self._publisher.last_version if self._publisher else 0,
                "drifts_tagged": self._publisher.drifts_tagged if self._publisher else 0,
                "feature_layout": _layout(self.pinned),
            },
        )
        offsets = [
            TopicPartition(*_split(key), offset) for key, offset in self.positions.next.items()
        ]
        if offsets:  # for lag monitoring only; the checkpoint is the truth
            self._consumer.commit(offsets=offsets, asynchronous=True)

    def _close(self) -> None:
        try:
            self._consumer.close()
        except KafkaException as exc:  # a fenced consumer may refuse to leave cleanly
            log.warning("consumer close failed", extra={"error": str(exc)})
        if self._metrics_producer is not None:
            self._metrics_producer.flush(10)

    def _fetch_stamped(self) -> list[tuple[list[Message], int]]:
        try:
            return consume_stamped(self._consumer, self._fetch, 0.2, LINGER_S, self._clock)
        except KafkaException as exc:
            self._consumer_error(exc.args[0])
            return []

    def _clock(self) -> int:
        return self._epoch

    def _current(self, fetched: list[tuple[list[Message], int]]) -> list[Message]:
        """The records of the current assignment; error events are handled on the way.

        `fetched`: runs of records, each with the assignment epoch read after its call.
        """
        if fetched and fetched[0][1] == fetched[-1][1]:  # stamps only grow within a fetch
            records = _joined(fetched)
            if self._all_current(records, fetched[0][1]):
                return records
        records = []
        for run, epoch in fetched:
            for msg in run:
                error = msg.error()
                if error is not None:
                    self._consumer_error(error)
                elif self._assigned.get(partition_key(msg), epoch + 1) <= epoch:
                    records.append(msg)
                else:  # fetched before its partition's (re)assignment: it will be read again
                    log.debug("dropped a record of an earlier assignment", extra={"at": where(msg)})
        return records

    def _all_current(self, records: list[Message], epoch: int) -> bool:
        """No error event, and every record's partition assigned at or before `epoch`.

        One pass over the records and one lookup per partition, instead of a lookup per
        record: the common case of a fetch with no rebalance in it.
        """
        if any([m.error() for m in records]):
            return False
        topics = {m.topic() for m in records}
        partitions = {m.partition() for m in records}
        assigned = self._assigned
        return all(assigned.get(f"{t}:{p}", epoch + 1) <= epoch for t in topics for p in partitions)

    def _consumer_error(self, error: KafkaError) -> None:
        """EOF is no error; a fatal one raises ConsumerFatal; others are counted and logged."""
        if error.code() == KafkaError._PARTITION_EOF:
            return
        # A fenced consumer reports _FATAL, its `fatal()` possibly false (confluent-kafka #869).
        if error.fatal() or error.code() == KafkaError._FATAL:
            self._fatal = error.str()
            log.critical(
                "fatal consumer error: stopping without writing the checkpoint",
                extra={"error": error.str(), "code": error.name()},
            )
            raise ConsumerFatal(f"fatal consumer error: {error.str()}")
        name = error.name()
        CONSUMER_ERRORS.labels(name).inc()
        now = time.monotonic()
        last, since = self._error_logged.get(name, (-ERROR_LOG_EVERY_S, 0))
        if now - last < ERROR_LOG_EVERY_S:
            self._error_logged[name] = (last, since + 1)
            return
        self._error_logged[name] = (now, 0)
        log.warning(
            "consumer error", extra={"error": error.str(), "code": name, "not_logged": since}
        )

    def _learn(self, records: list[Message]) -> None:
        for applying in self._batcher.add(records):
            self._apply(applying)
        if self.learner.applied == 0:
            # Nothing of our stream seen yet, ever: a misnamed TRAINER_STREAM must not move the
            # checkpoint past the records it skips; once fixed, a restart learns them.
            return
        passed = self.positions.pass_over(self._batcher.settled())
        self._checkpoint_every.count(passed)  # skipped records move the checkpoint too

    def _apply(self, applying: list[Message]) -> None:
        before = (self.learner.applied, self.learner.skipped)
        exporter = self._learn_records(applying)
        self.positions.advance(applying)
        APPLIED.inc(self.learner.applied - before[0])
        SKIPPED.inc(self.learner.skipped - before[1])
        self._observed.update(self.pinned)
        if self._publisher is not None and self._publisher.exporter is None:
            self._publisher.exporter = exporter()
        self._checkpoint_every.count(len(applying))
        self._version_every.count(len(applying))
        log.debug("applied", extra={"position": where(applying[-1]), "events": len(applying)})

    def _learn_records(self, applying: list[Message]) -> Callable[[], Exporter | None]:
        """Decode and learn `applying`; returns how to make the exporter (None: not yet)."""
        learner = self.learner
        assert isinstance(learner, Learner)  # a loop over tabular samples
        pinned = self.pinned
        batch, _ = decode_for(learner.config, applying, pinned.featurizer, resolve=pinned.resolve)
        learner.learn(batch)
        return lambda: _exporter(learner, batch.finite_rows(16))

    def _housekeeping(self) -> None:
        if self._checkpoint_every.due():
            self.save()
            self._checkpoint_every.reset()
        if self._version_every.due() and self._publisher is not None:
            self.pinned.notice()
            try:
                if self._publisher.publish(self.positions) is not None:
                    self._publish_metrics()
            except StreamlearnError as exc:  # registry down: keep learning, retry next time
                log.warning("version not published", extra={"error": str(exc)})
            self._version_every.reset()

    def _publish_metrics(self) -> None:
        snapshot = self.learner.scores()
        for name, value in snapshot.items():
            METRIC.labels(name).set(value)
        if self._metrics_producer is None or self._publisher is None:
            return
        now = Timestamp()
        now.GetCurrentTime()
        message = metrics_pb2.TrainerMetrics(
            schema_version=1,
            trainer_id=self._publisher.trainer_id,
            model=self._publisher.model,
            stream=self._publisher.stream,
            events_applied=self.learner.applied,
            events_skipped=self.learner.skipped,
            metrics=snapshot | self._observed.counters(),
            time=now,
            model_version=self._publisher.last_version,
        )
        self._metrics_producer.produce(self._metrics_topic, message.SerializeToString())
        self._metrics_producer.poll(0)

    def _restore(self) -> None:
        saved = checkpoint.load(self._path)
        if saved is None:
            return
        if saved["config_hash"] != self.learner.config.hash():
            raise StreamlearnError(
                f"checkpoint {self._path} was written by another config; "
                "move it away to start this config from scratch"
            )
        layout, saved_layout = _layout(self.pinned), saved.get("feature_layout", "")
        if layout and saved_layout and layout != saved_layout:
            # Same config, but the stream's schema moved its fields (order, names, buckets):
            # the saved weights and scaler belong to other slots.
            raise StreamlearnError(
                f"checkpoint {self._path} was learned with another feature layout of stream "
                f"{self.pinned.stream!r} ({saved_layout}, now {layout}); move it away to "
                "learn the new layout from scratch"
            )
        self.learner.restore(saved["learner"])
        self.positions = Positions.from_dict(saved["positions"])
        if self._publisher is not None:
            self._publisher.resume(saved["last_version"], saved.get("drifts_tagged", 0))
        self._observed = _Observed(self.learner)  # the restored counts are not this process's
        log.info(
            "restored checkpoint",
            extra={"events": self.learner.applied, "offsets": self.positions.next},
        )

    def _on_assign(self, consumer: Any, partitions: Sequence[TopicPartition]) -> None:
        """Position each partition from the checkpoint, not from Kafka's committed offsets."""
        if self._alone is not None:
            check, self._alone = self._alone, None
            try:
                check()
            except Conflict as exc:  # raised out of poll/consume: run() stops
                self._fatal = str(exc)
                log.critical("second trainer of the model: stopping", extra={"error": str(exc)})
                raise
        self._epoch += 1
        keys = []
        for tp in partitions:
            resume = self.positions.resume_at(tp.topic, tp.partition)
            tp.offset = OFFSET_BEGINNING if resume is None else resume
            keys.append(f"{tp.topic}:{tp.partition}")
            self._assigned[keys[-1]] = self._epoch
        self._batcher.drop(keys)  # held-back records are re-read from the checkpoint's positions
        consumer.assign(list(partitions))

    def _on_revoke(self, consumer: Any, partitions: Sequence[TopicPartition]) -> None:
        """Hand partitions over with a durable checkpoint of what was applied."""
        self.save()
        self._forget(partitions)

    def _on_lost(self, consumer: Any, partitions: Sequence[TopicPartition]) -> None:
        """Partitions taken away without a hand-over (fenced, or the session expired).

        Another member may own them already and have checkpointed past us: writing our
        checkpoint now could overwrite the live one, so only what was read is forgotten.
        """
        log.warning("partitions lost", extra={"partitions": [tp.partition for tp in partitions]})
        self._forget(partitions)

    def _forget(self, partitions: Sequence[TopicPartition]) -> None:
        self._epoch += 1
        keys = [f"{tp.topic}:{tp.partition}" for tp in partitions]
        for key in keys:
            self._assigned.pop(key, None)
        self._batcher.drop(keys)


class _Observed:
    """Prometheus counters that follow the learner's and the featurizer's running counts.

    Those counts live in checkpoints; the Prometheus ones count this process's increments.
    """

    def __init__(self, learner: Learning) -> None:
        self._learner = learner
        self._seen = self.counters()
        self._missing: dict[str, int] = {}

    def counters(self) -> dict[str, float]:
        """The learner's drift and feature counters, for the metrics topic."""
        return {name: float(getattr(self._learner, name)) for name in LEARNER_COUNTERS}

    def update(self, pinned: PinnedStream) -> None:
        """Advance the Prometheus counters to the current counts."""
        now = self.counters()
        for name, counter in (
            ("drifts", DRIFTS),
            ("diverging", DIVERGING),
            ("new_categories", NEW_CATEGORIES),
        ):
            if now[name] > self._seen[name]:
                counter.inc(now[name] - self._seen[name])
        if now["drifts"]:
            LAST_DRIFT.set(now["last_drift_event"])
        self._seen = now
        if pinned.featurizer is not None:
            for field, count in pinned.featurizer.tally.missing.items():
                if count > self._missing.get(field, 0):
                    MISSING.labels(field).inc(count - self._missing.get(field, 0))
                    self._missing[field] = count


def _layout(pinned: PinnedStream) -> str:
    """Which slot each named feature fills ("" when nothing is pinned): weights depend on it."""
    if pinned.featurizer is None:
        return ""
    space = pinned.featurizer.space
    return json.dumps([space.numeric, space.categorical, space.crosses, space.buckets])


def _exporter(learner: Learner, probe: Batch) -> Exporter | None:
    """An exporter checked on `probe`, once some rows are usable (None: not yet)."""
    return OnnxExporter(learner, probe) if len(probe) else None


def _joined(runs: list[tuple[list[Message], int]]) -> list[Message]:
    """The records of runs, in order, in one list (extended run by run, not per record)."""
    if len(runs) == 1:
        return runs[0][0]
    records: list[Message] = []
    for run, _ in runs:
        records += run
    return records


def _split(key: str) -> tuple[str, int]:
    topic, _, partition = key.rpartition(":")
    return topic, int(partition)
