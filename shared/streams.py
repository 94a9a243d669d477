"""Stream definitions: kept in a compacted topic keyed by stream name, followed live.

Ingestion validates every sample against the definition of its stream. Definitions are
created and changed at run time (`streamlearn stream create`); a running service sees a
change within a fraction of a second, and a sample sent right after its stream was created
is never rejected as unknown.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from shared.errors import Conflict, InvalidArgument
from shared.features import FeatureSpace
from shared.kafka.config import consumer_config, producer_config
from shared.kafka.producer import delivering
from shared.settings import KafkaSettings
from streamlearn.v1 import stream_pb2

log = logging.getLogger(__name__)
Definition = stream_pb2.StreamDefinition
_FOLLOW_EVERY_S = 0.05


# The largest text a text stream may allow per sample (a record stays well within Kafka's
# default 1 MB limit).
MAX_TEXT_BYTES = 256 * 1024


def check_definition(definition: Definition) -> None:
    """Raise InvalidArgument when a definition cannot describe any valid sample."""
    kinds = stream_pb2.LabelKind
    problems = []
    if not definition.name or len(definition.name) > 200:
        problems.append("a name of 1-200 characters is required")
    # A text stream's samples carry text (language models learn its next bytes): features
    # and a label are optional there.
    text = definition.text.max_bytes > 0
    if definition.text.max_bytes > MAX_TEXT_BYTES:
        problems.append(f"text.max_bytes must be at most {MAX_TEXT_BYTES}")
    if not text and definition.dense_dim == 0 and definition.sparse_buckets == 0:
        problems.append("dense_dim or sparse_buckets must be > 0 (or text.max_bytes)")
    if not text and definition.label_kind == kinds.LABEL_KIND_UNSPECIFIED:
        problems.append("label_kind is required (except on a text stream)")
    needs_classes = definition.label_kind in (
        kinds.LABEL_KIND_MULTICLASS,
        kinds.LABEL_KIND_MULTILABEL,
    )
    if needs_classes and definition.num_classes < 2:
        problems.append("multiclass/multilabel streams need num_classes >= 2")
    names = definition.class_names
    if names and len(names) != max(definition.num_classes, 2):
        problems.append(f"{len(names)} class_names for {definition.num_classes} classes")
    space = FeatureSpace.from_definition(definition)
    if space is not None:
        problems += space.problems()
        if not space.numeric:  # the trainer's models need a dense input (for now)
            problems.append("a feature schema needs at least one numeric feature")
        if definition.dense_dim != len(space.numeric):
            problems.append(
                f"dense_dim {definition.dense_dim} != {len(space.numeric)} numeric features"
            )
    elif definition.features.crosses:
        problems.append("crosses need categorical features")
    problems += _join_problems(definition)
    if problems:
        raise InvalidArgument(f"stream {definition.name!r}: " + "; ".join(problems))


def _join_problems(definition: Definition) -> list[str]:
    """What is wrong with the stream's join policy (all zero: the joiner's defaults)."""
    join = definition.join
    window, after, value = join.window_s, join.negative_after_s, join.negative_value
    if not all(math.isfinite(v) for v in (window, after, value)):
        return ["join: window_s, negative_after_s and negative_value must be finite"]
    problems = []
    if window < 0 or after < 0:
        problems.append("join: window_s and negative_after_s must not be negative")
    if window > 0 and after > window:
        problems.append(f"join: negative_after_s {after} is after the window closes ({window})")
    kinds = stream_pb2.LabelKind
    if definition.label_kind in (kinds.LABEL_KIND_BINARY, kinds.LABEL_KIND_MULTICLASS):
        classes = 2 if definition.label_kind == kinds.LABEL_KIND_BINARY else definition.num_classes
        if value != int(value) or not 0 <= value < classes:
            problems.append(f"join: negative_value {value} is not a class index below {classes}")
    return problems


class StreamCatalog:
    """The live set of stream definitions, followed from the compacted topic by a thread.

    The follower reads to the topic's end every few tens of milliseconds and records when it
    last was there (`fresh_as_of`). A lookup that misses for a record written after that
    moment waits for the next round, so a stream created just before its first sample is
    always found; a miss for an older record is final at once.
    """

    def __init__(self, kafka: KafkaSettings, topic: str, *, max_wait_s: float = 2.0) -> None:
        self._topic = topic
        self._consumer = Consumer(
            consumer_config(
                kafka, f"streamlearn-catalog-{uuid.uuid4().hex}", enable_auto_commit=False
            )
        )
        self._definitions: dict[str, Definition] = {}
        self._fresh_as_of = 0.0  # wall time at which the follower last was at the end
        self._max_wait_s = max_wait_s
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="stream-catalog", daemon=True)

    def start(self, timeout: float = 30.0) -> StreamCatalog:
        """Assign the topic from its start, read up to its end, then follow it."""
        self._consumer.assign([TopicPartition(self._topic, 0, 0)])
        self._thread.start()
        self._wait_fresh(time.time(), timeout)
        return self

    def close(self) -> None:
        """Stop following and close the consumer."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        self._consumer.close()

    def get(self, name: str, written_at: float = 0.0) -> Definition | None:
        """The definition of `name` as of `written_at` (wall time) or later."""
        with self._changed:
            found = self._definitions.get(name)
        if found is None and written_at > self._fresh_as_of:
            self._wait_fresh(written_at, self._max_wait_s)
            with self._changed:
                found = self._definitions.get(name)
        return found

    def all(self) -> list[Definition]:
        """Every live definition, by name."""
        with self._changed:
            return [self._definitions[n] for n in sorted(self._definitions)]

    def _wait_fresh(self, moment: float, timeout: float) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._fresh_as_of >= moment, timeout)

    def _follow(self) -> None:
        # Only this thread touches the consumer: confluent-kafka consumers are not safe to
        # call from several threads at once.
        position = 0
        while not self._stop.is_set():
            asked_at = time.time()
            try:
                end = self._consumer.get_watermark_offsets(TopicPartition(self._topic, 0), 10)[1]
            except KafkaException as exc:  # e.g. a leader moving, a broker restarting
                log.warning("stream definitions unreachable", extra={"error": str(exc)})
                self._stop.wait(1.0)
                continue
            while position < end and not self._stop.is_set():
                for msg in self._consumer.consume(500, 0.5):
                    if msg.error() is None:
                        self._apply(msg.key(), msg.value())
                        position = (msg.offset() or 0) + 1
            with self._changed:
                self._fresh_as_of = asked_at
                self._changed.notify_all()
            self._stop.wait(_FOLLOW_EVERY_S)

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        name = (key or b"").decode(errors="replace")
        with self._changed:
            if not value:  # a tombstone: the stream was deleted
                self._definitions.pop(name, None)
                return
            try:
                definition = Definition.FromString(value)
            except Exception:
                log.warning("unreadable stream definition", extra={"stream": name})
                return
            current = self._definitions.get(name)
            if current is None or definition.revision > current.revision:
                self._definitions[name] = definition


def load_definitions(kafka: KafkaSettings, topic: str) -> list[Definition]:
    """Every live definition, read once up to the topic's end."""
    catalog = StreamCatalog(kafka, topic).start()
    try:
        return catalog.all()
    finally:
        catalog.close()


def publish_definition(
    kafka: KafkaSettings, topic: str, definition: Definition, *, replace: bool = False
) -> Definition:
    """Create (or with `replace`, change) a stream; returns it with its new revision.

    Raises:
        InvalidArgument: the definition is inconsistent.
        Conflict: creating a stream that exists, or replacing one that does not.

    """
    check_definition(definition)
    current = {d.name: d for d in load_definitions(kafka, topic)}.get(definition.name)
    if current is not None and not replace:
        raise Conflict(
            f"stream {definition.name!r} exists (revision {current.revision}); use --replace"
        )
    if current is None and replace:
        raise Conflict(f"stream {definition.name!r} does not exist")
    stored = Definition()
    stored.CopyFrom(definition)
    stored.revision = (current.revision if current else 0) + 1
    producer = Producer(producer_config(kafka))
    with delivering(producer) as report:
        producer.produce(
            topic, stored.SerializeToString(), stored.name.encode(), on_delivery=report
        )
    return stored
