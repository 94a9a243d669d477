"""Relays the registry's outbox to the model-events topic, in sequence order, at least once."""

from __future__ import annotations

import logging
import threading

from confluent_kafka import Producer

from services.registry.convert import event_to_pb
from services.registry.registry import Registry
from shared.errors import Unavailable
from shared.kafka.producer import delivering

log = logging.getLogger(__name__)


class EventPublisher:
    """A thread that sends unpublished events and marks them published once acknowledged.

    Events go to one partition keyed by model, so Kafka keeps their order. A crash between the
    broker's ack and the mark re-sends a few events on restart: consumers drop sequences they
    have seen (ModelEvent.sequence only grows).
    """

    def __init__(self, registry: Registry, producer: Producer, topic: str) -> None:
        self._registry = registry
        self._producer = producer
        self._topic = topic
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-publisher", daemon=True)

    def start(self) -> None:
        """Start relaying."""
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Relay what is pending, then stop."""
        self._stop.set()
        with self._registry.changed:
            self._registry.changed.notify_all()
        self._thread.join(timeout)

    def publish_pending(self) -> int:
        """Send every unpublished event now; returns how many were sent."""
        sent = 0
        while events := self._registry.unpublished_events():
            with delivering(self._producer) as report:
                for event in events:
                    self._producer.produce(
                        self._topic,
                        event_to_pb(event).SerializeToString(),
                        event.model.encode(),
                        partition=0,
                        on_delivery=report,
                    )
                    self._producer.poll(0)
            self._registry.mark_published(events[-1].sequence)
            sent += len(events)
        return sent

    def _run(self) -> None:
        while True:
            try:
                self.publish_pending()
            except Unavailable as exc:  # the database is down: the outbox waits for it
                log.warning("publishing model events paused", extra={"error": str(exc)})
            except Exception:  # Kafka down: keep the outbox, retry after the next wait
                log.exception("publishing model events failed; will retry")
            if self._stop.is_set():
                return
            self._registry.wait_for_change(timeout=1.0)
