"""Keep each served model on the version its alias names: download, verify, warm, then swap."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from confluent_kafka import Consumer, Message, TopicPartition
from google.protobuf.message import DecodeError

from services.inference import stats
from services.inference.model import LoadedModel
from services.inference.repository import ServedModel
from shared.clients.registry import RegistryClient
from shared.errors import NotFound, StreamlearnError
from shared.kafka.consumer import consume_ready, high_watermarks
from shared.ort import Device
from streamlearn.v1 import events_pb2, registry_pb2

log = logging.getLogger(__name__)

RELEVANT = {
    events_pb2.MODEL_EVENT_TYPE_VERSION_REGISTERED,
    events_pb2.MODEL_EVENT_TYPE_ALIAS_SET,
    events_pb2.MODEL_EVENT_TYPE_ALIAS_DELETED,
    events_pb2.MODEL_EVENT_TYPE_PROMOTED,
    events_pb2.MODEL_EVENT_TYPE_ROLLED_BACK,
}


class VersionFollower:
    """Reconciles one served model with the registry: the alias's version, else the newest."""

    def __init__(
        self,
        served: ServedModel,
        registry: RegistryClient,
        alias: str,
        pinned_version: int = 0,
        device: Device = "auto",
        threads: int = 1,
    ) -> None:
        self.served = served
        self._registry = registry
        self._alias = alias
        self._pinned = pinned_version
        self._device = device
        self._threads = threads
        self._lock = threading.Lock()  # one load at a time per model

    def target(self) -> registry_pb2.ModelVersion | None:
        """The version that should be served now (None: the model has no versions yet)."""
        name = self.served.name
        try:
            if self._pinned:
                return self._registry.get_version(name, self._pinned)
            try:
                return self._registry.get_version(name, alias=self._alias)
            except NotFound:
                return self._registry.get_version(name)  # no alias yet: the newest
        except NotFound:
            return None

    def reconcile(self) -> bool:
        """Load and swap in the target version if it is not served; True if a swap happened.

        A version that fails to download, verify, load or warm up is refused: the old one
        keeps serving, and the next event or periodic check tries again.
        """
        with self._lock:
            wanted = self.target()
            current = self.served.current
            if wanted is None or (current and current.version == wanted.version):
                return False
            try:
                model = self._load(wanted.version)
            except Exception:
                stats.SWAPS.labels(self.served.name, "refused").inc()
                log.exception(
                    "refused version",
                    extra={"model": self.served.name, "model_version": wanted.version},
                )
                return False
            previous = self.served.swap(model)
        stats.SWAPS.labels(self.served.name, "swapped").inc()
        stats.SERVED.labels(self.served.name).set(model.version)
        log.info(
            "serving new version",
            extra={
                "model": self.served.name,
                "model_version": model.version,
                "previous_version": previous,
                "providers": model.providers,
            },
        )
        return True

    def _load(self, version: int) -> LoadedModel:
        meta, data = self._registry.download(self.served.name, version)  # sha256 checked
        lineage = meta.lineage
        # The schema revision the version was trained on decides its named inputs.
        definition = lineage.stream_definition if lineage.HasField("stream_definition") else None
        model = LoadedModel(
            self.served.name,
            meta.version,
            data,
            meta.artifact.sha256,
            self._device,
            self._threads,
            definition,
        )
        model.warm_up()
        return model


class FollowerFailed(StreamlearnError):
    """The model-events follower kept dying: the process exits so that it is restarted."""


class EventWatcher:
    """Reconciles followers when the model-events topic announces a relevant change.

    Also reconciles every `resync_s`, so a missed event (or a registry that was down) only
    delays a swap. Reads from the end of the topic: state is rebuilt from the registry.

    An undecodable record is skipped and counted. Should the thread die anyway, `on_failure`
    is called (the app reports NOT_SERVING) and `restart` brings it back, on a new consumer
    when `new_consumer` is given; `following` says when it follows again.
    """

    def __init__(
        self,
        followers: list[VersionFollower],
        consumer: Consumer,
        topic: str,
        resync_s: float = 30.0,
        on_failure: Callable[[BaseException], None] | None = None,
        new_consumer: Callable[[], Consumer] | None = None,
    ) -> None:
        """Follow `topic` with `consumer`.

        Args:
            followers: One per served model.
            consumer: Assigned by `start`.
            topic: The model-events topic.
            resync_s: Reconcile every model this often even without events.
            on_failure: Called with what killed the follow thread.
            new_consumer: Builds the consumer a restart follows with (the old one, which
                may be what failed, is closed); None: a restart keeps the old one.

        """
        self._followers = {f.served.name: f for f in followers}
        self._consumer = consumer
        self._topic = topic
        self._resync_s = resync_s
        self.on_failure = on_failure
        self._new_consumer = new_consumer
        self._stop = threading.Event()
        self._cycled = threading.Event()  # the current thread completed a poll cycle
        self._thread = self._new_thread()

    def start(self) -> None:
        """Pin the current end of the topic, then follow from there.

        The end offset is resolved now, not lazily at the first fetch: an event written
        between this call and the first fetch would otherwise be skipped. Callers reconcile
        after `start`, so every change is covered by the reconcile or by an event.
        """
        end = high_watermarks(self._consumer, self._topic)[0]
        self._consumer.assign([TopicPartition(self._topic, 0, end)])
        self._thread.start()

    def alive(self) -> bool:
        """True while the follow thread runs (or was stopped on purpose)."""
        return self._thread.is_alive() or self._stop.is_set()

    def following(self) -> bool:
        """The follow thread runs and has completed a poll cycle since it (re)started."""
        return self._thread.is_alive() and self._cycled.is_set()

    def restart(self) -> None:
        """Start a new follow thread after the last one died.

        With `new_consumer`, the old consumer is closed and a new one pinned at the end of
        the topic (callers reconcile after a restart, which covers what was missed);
        otherwise it goes on from the consumer's position, so the record that killed the
        old thread is not read again.
        """
        if self.alive():
            return
        self._cycled.clear()
        self._thread = self._new_thread()
        if self._new_consumer is None:
            self._thread.start()
            return
        try:
            self._consumer.close()
        except Exception:  # it may be what failed; the new one matters
            log.warning("closing the failed model-events consumer failed", exc_info=True)
        self._consumer = self._new_consumer()
        self.start()

    def stop(self) -> None:
        """Stop following and close the consumer."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(10)
        self._consumer.close()

    def reconcile_all(self) -> None:
        """Bring every model to its target version now."""
        for name in self._followers:
            self._reconcile(name)

    def _new_thread(self) -> threading.Thread:
        return threading.Thread(target=self._guarded_run, name="model-events", daemon=True)

    def _reconcile(self, name: str) -> None:
        try:
            self._followers[name].reconcile()
        except StreamlearnError as exc:  # registry unreachable: retried later
            log.warning("reconcile failed", extra={"model": name, "error": str(exc)})

    def _guarded_run(self) -> None:
        try:
            self._run()
        except BaseException as exc:
            log.exception("model-events follower died", extra={"topic": self._topic})
            if self.on_failure is not None:
                self.on_failure(exc)

    def _run(self) -> None:
        next_resync = time.monotonic() + self._resync_s
        while not self._stop.is_set():
            due = self._due(consume_ready(self._consumer, 100, 0.2))
            if time.monotonic() >= next_resync:
                due, next_resync = set(self._followers), time.monotonic() + self._resync_s
            for name in due:
                self._reconcile(name)
            self._cycled.set()  # the heartbeat: this thread does follow

    def _due(self, messages: list[Message]) -> set[str]:
        due = set()
        for msg in messages:
            if msg.error() is not None:
                continue
            event = self._decode(msg)
            if event is not None and event.model in self._followers and event.type in RELEVANT:
                due.add(event.model)
        return due

    def _decode(self, msg: Message) -> events_pb2.ModelEvent | None:
        """The event a record holds; None (skipped, counted, logged) when it holds none."""
        try:
            return events_pb2.ModelEvent.FromString(msg.value() or b"")
        except DecodeError as exc:
            stats.BAD_EVENTS.inc()
            log.warning(
                "skipped undecodable model event",
                extra={
                    "topic": msg.topic(),
                    "partition": msg.partition(),
                    "offset": msg.offset(),
                    "error": str(exc),
                },
            )
            return None
