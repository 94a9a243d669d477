"""The trainer's Kafka loop: consume, decode, learn, checkpoint with offsets, publish.

Offsets live in the checkpoint beside the weights; on (re)assignment every partition is
positioned from the checkpoint, so a crash neither loses nor repeats an event. Kafka's
committed offsets follow the checkpoints and only serve monitoring (lag).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import Counter, Gauge

from services.trainer import checkpoint
from services.trainer.decode import decode
from services.trainer.export import OnnxExporter
from services.trainer.learner import Learner
from services.trainer.progress import Every, Positions
from services.trainer.versions import VersionPublisher
from shared import samples
from shared.errors import StreamlearnError
from shared.kafka.consumer import consume_ready, where
from streamlearn.v1 import metrics_pb2

log = logging.getLogger(__name__)

APPLIED = Counter("streamlearn_trainer_events_applied_total", "Events learned from")
SKIPPED = Counter("streamlearn_trainer_events_skipped_total", "Events refused by the guard")
METRIC = Gauge("streamlearn_trainer_prequential", "Prequential metric", ["metric"])
# After the first record of a fetch, wait this long for more: a trainer catching up keeps
# taking large batches, while a trickle is learned (and published) without delay.
LINGER_S = 0.01


class TrainerLoop:
    """One trainer: a learner fed by a consumer, checkpointed, publishing versions."""

    def __init__(
        self,
        learner: Learner,
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
    ) -> None:
        self.learner = learner
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
        self._pending: list[Message] = []  # read but not applied: an incomplete mini-batch
        self._restore()

    def run(self, stop: threading.Event) -> None:
        """Learn until `stop`; a final checkpoint is written on the way out."""
        self._consumer.subscribe(
            [self._topic], on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        try:
            while not stop.is_set():
                batch = consume_ready(self._consumer, self._fetch, 0.2, linger=LINGER_S)
                records = [m for m in batch if not m.error()]
                if records:
                    self._learn(records)
                self._housekeeping()
        finally:
            self.save()
            self._consumer.close()
            if self._metrics_producer is not None:
                self._metrics_producer.flush(10)

    def save(self) -> None:
        """Checkpoint weights, optimizer, metrics and next offsets together."""
        checkpoint.save(
            self._path,
            {
                "learner": self.learner.state(),
                "positions": self.positions.as_dict(),
                "config_hash": self.learner.config.hash(),
                "last_version": self._publisher.last_version if self._publisher else 0,
            },
        )
        offsets = [
            TopicPartition(*_split(key), offset) for key, offset in self.positions.next.items()
        ]
        if offsets:  # for lag monitoring only; the checkpoint is the truth
            self._consumer.commit(offsets=offsets, asynchronous=True)

    def _learn(self, records: list[Message]) -> None:
        size = self.learner.config.batch_size
        segments, self._pending = mini_batch_cut(self._pending + records, size)
        for applying in segments:
            self._apply(applying)

    def _apply(self, applying: list[Message]) -> None:
        config = self.learner.config
        batch, _ = decode(applying, config.task, config.model.features)
        before = (self.learner.applied, self.learner.skipped)
        self.learner.learn(batch)
        self.positions.advance(applying)
        APPLIED.inc(self.learner.applied - before[0])
        SKIPPED.inc(self.learner.skipped - before[1])
        probe = batch.finite_rows(16)
        if self._publisher is not None and self._publisher.exporter is None and len(probe):
            self._publisher.exporter = OnnxExporter(self.learner, probe)
        self._checkpoint_every.count(len(applying))
        self._version_every.count(len(applying))
        log.debug("applied", extra={"position": where(applying[-1]), "events": len(applying)})

    def _housekeeping(self) -> None:
        if self._checkpoint_every.due():
            self.save()
            self._checkpoint_every.reset()
        if self._version_every.due() and self._publisher is not None:
            try:
                self._publisher.publish(self.positions)
                self._publish_metrics()
            except StreamlearnError as exc:  # registry down: keep learning, retry next time
                log.warning("version not published", extra={"error": str(exc)})
            self._version_every.reset()

    def _publish_metrics(self) -> None:
        snapshot = self.learner.metrics.snapshot()
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
            metrics=snapshot,
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
        self.learner.restore(saved["learner"])
        self.positions = Positions.from_dict(saved["positions"])
        if self._publisher is not None:
            self._publisher.last_version = saved["last_version"]
        log.info(
            "restored checkpoint",
            extra={"events": self.learner.applied, "offsets": self.positions.next},
        )

    def _on_assign(self, consumer: Any, partitions: Sequence[TopicPartition]) -> None:
        """Position each partition from the checkpoint, not from Kafka's committed offsets."""
        for tp in partitions:
            resume = self.positions.resume_at(tp.topic, tp.partition)
            tp.offset = OFFSET_BEGINNING if resume is None else resume
        self._pending.clear()  # re-read from the checkpoint's positions
        consumer.assign(list(partitions))

    def _on_revoke(self, consumer: Any, partitions: Sequence[TopicPartition]) -> None:
        """Hand partitions over with a durable checkpoint of what was applied."""
        self.save()
        self._pending.clear()


def _split(key: str) -> tuple[str, int]:
    topic, _, partition = key.rpartition(":")
    return topic, int(partition)


def mini_batch_cut(ready: list[Message], size: int) -> tuple[list[list[Message]], list[Message]]:
    """(segments to learn now, records to hold back) so mini-batches never depend on polling.

    Mini-batches are counted from the last cut: held-back single samples wait for a full
    mini-batch, and a batch record (many rows) always ends a segment, its last mini-batch
    possibly short. The grouping is thus a function of the stream alone, and a restart from
    a checkpoint (always taken at a cut) repeats it exactly.
    """
    if size == 1:
        return ([ready] if ready else []), []
    segments, start = [], 0
    for i, message in enumerate(ready):
        if samples.is_batch(samples.headers_of(message)):
            segments.append(ready[start : i + 1])
            start = i + 1
    tail = ready[start:]
    usable = len(tail) - len(tail) % size
    if usable:
        segments.append(tail[:usable])
    return segments, tail[usable:]
