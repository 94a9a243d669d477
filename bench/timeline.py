"""When each record reached each hop of the pipeline, observed from outside the services.

All times are wall-clock seconds on this machine (the services run here too): a record's
first event id is its identity from the producer to the training topic; from there its
(partition, offset) places it in the first version whose lineage covers that offset.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from google.protobuf.message import DecodeError

from shared.clients.registry import RegistryClient
from shared.errors import NotFound, StreamlearnError
from shared.kafka.config import consumer_config
from shared.kafka.consumer import consume_ready, high_watermarks
from shared.settings import KafkaSettings
from streamlearn.client.inference import InferenceClient
from streamlearn.v1 import events_pb2, sample_pb2

SERVED_POLL_S = 0.01  # how often inference is asked which versions it serves


@dataclass
class Timeline:
    """Everything observed, filled by the watcher threads."""

    produced: dict[str, float] = field(default_factory=dict)  # record id -> time sent
    trained_on: dict[str, tuple[float, int, int]] = field(default_factory=dict)  # t, p, offset
    # model -> version -> (registered at, {partition: next offset})
    versions: dict[str, dict[int, tuple[float, dict[int, int]]]] = field(default_factory=dict)
    served: dict[str, dict[int, float]] = field(default_factory=dict)  # model -> version -> t


class Watchers:
    """Three threads: the training topic, the registry's versions and inference, until stopped.

    The watchers share the cores with the services they time, so each costs little: versions
    are learned from the model-events topic (one `GetVersion` a version, for its lineage),
    not by listing the registry's newest versions over and over (that was half of the
    registry's CPU in a freshness run).
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: tuple[str, str],
        registry: str,
        inference: str,
        models: list[str],
        tracked: bytes | None = None,
    ) -> None:
        """Watch the training topic and the models' versions (`topics`: the training and
        model-events topics); with `tracked`, only records whose Kafka key starts with it
        are placed (each a single `Sample`), otherwise every record (a `SampleBatch`,
        placed by its first event id)."""
        train, model_events = topics
        self.timeline = Timeline(versions={m: {} for m in models}, served={m: {} for m in models})
        self._stop = threading.Event()
        self.missed = 0  # versions deleted before their lineage was read
        self._tracked = tracked
        self._consumer = Consumer(consumer_config(kafka, "bench-freshness"))
        ends = high_watermarks(self._consumer, train)
        self._consumer.assign([TopicPartition(train, p, o) for p, o in ends.items()])
        self._events = Consumer(consumer_config(kafka, "bench-freshness-events"))
        partitions = high_watermarks(self._events, model_events)
        self._events.assign([TopicPartition(model_events, p, OFFSET_BEGINNING) for p in partitions])
        self._registry = RegistryClient(registry)
        self._inference = InferenceClient(inference, timeout=2.0)
        self._threads = [
            threading.Thread(target=t, daemon=True)
            for t in (self._follow_train, self._follow_versions, self._poll_inference)
        ]

    def start(self) -> Watchers:
        """Begin watching."""
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop the threads and close the clients."""
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        self._consumer.close()
        self._events.close()
        self._registry.close()
        self._inference.close()

    def _follow_train(self) -> None:
        while not self._stop.is_set():
            for msg in consume_ready(self._consumer, 5000, 0.05):
                if msg.error() is None:
                    record = self._identity(msg.key() or b"", msg.value() or b"")
                    if record is not None:
                        where = (time.time(), msg.partition() or 0, msg.offset() or 0)
                        self.timeline.trained_on[record] = where

    def _identity(self, key: bytes, value: bytes) -> str | None:
        """A record's identity: a tracked sample's event id, a batch's first one."""
        if self._tracked is None:
            return sample_pb2.SampleBatch.FromString(value).event_ids[0]
        if not key.startswith(self._tracked):
            return None
        return sample_pb2.Sample.FromString(value).event_id

    def _follow_versions(self) -> None:
        """Each version registered of a watched model: when, and how far its lineage reaches."""
        pending: dict[tuple[str, int], None] = {}  # announced, not read yet (registry busy)
        registered = events_pb2.MODEL_EVENT_TYPE_VERSION_REGISTERED
        while not self._stop.is_set():
            for msg in consume_ready(self._events, 100, 0.05):
                if msg.error() is not None:
                    continue
                try:
                    event = events_pb2.ModelEvent.FromString(msg.value() or b"")
                except DecodeError:  # no event: the watcher only times what it can read
                    continue
                versions = self.timeline.versions.get(event.model)
                new = versions is not None and event.version not in versions  # may come twice
                if event.type == registered and new:
                    pending[(event.model, event.version)] = None
            for model, number in list(pending):
                if self._place_version(model, number):
                    del pending[(model, number)]
            if pending:
                self._stop.wait(0.1)  # the registry refused: try again shortly, not at once

    def _place_version(self, model: str, number: int) -> bool:
        """Record a version's registration time and coverage; False to try again later.

        A version deleted before it was read (the registry keeps the newest 100) is counted
        in `missed`: its records are then credited to the next version read.
        """
        try:
            version = self._registry.get_version(model, number)
        except NotFound:
            self.missed += 1
            return True
        except StreamlearnError:
            return False
        covered = {r.partition: r.next_offset for r in version.lineage.offsets}
        self.timeline.versions[model][number] = (version.created_at.ToNanoseconds() / 1e9, covered)
        return True

    def _poll_inference(self) -> None:
        # Every 10 ms: a record's served time is late by 5 ms on average (at most 10), and
        # the polls cost inference and this process half of what they did every 5 ms.
        while not self._stop.wait(SERVED_POLL_S):
            try:
                served = self._inference.served()
            except StreamlearnError:
                continue
            now = time.time()
            for model, version in served.items():
                if model in self.timeline.served and version:
                    self.timeline.served[model].setdefault(version, now)
