"""Publishing to the raw topic with acknowledgement per call (Kafka adapter of gRPC ingest)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, Message, Producer

from shared.errors import Unavailable
from shared.kafka.producer import DeliveryReport, produce

Record = tuple[bytes | None, bytes, list[tuple[str, bytes]]]  # key, value, headers


@dataclass
class _Pending(DeliveryReport):
    """The delivery reports of one call; `done` is set once every record has an answer."""

    expected: int = 0
    written: list[Message] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        super().__call__(err, msg)
        if err is None:
            self.written.append(msg)
        if self.delivered + len(self.failed) >= self.expected:
            self.done.set()


class RawPublisher:
    """An idempotent producer shared by concurrent calls, each waiting for its own records."""

    def __init__(self, producer: Producer, topic: str, timeout_s: float = 30.0) -> None:
        self._producer = producer
        self._topic = topic
        self._timeout_s = timeout_s
        self._stop = threading.Event()
        self._poller = threading.Thread(
            target=self._serve_reports, name="ingest-reports", daemon=True
        )
        self._poller.start()

    def publish(self, records: list[Record]) -> list[Message]:
        """Write `records` in order; return their positions once the broker has all of them.

        Raises:
            Unavailable: a record was refused or not acknowledged within the timeout.

        """
        pending = _Pending(expected=len(records))
        if not records:
            return []
        for key, value, headers in records:
            produce(self._producer, self._topic, value, key, headers=headers, on_delivery=pending)
        if not pending.done.wait(self._timeout_s):
            raise Unavailable(
                f"the broker did not acknowledge {len(records)} record(s) in {self._timeout_s:.0f}s"
            )
        pending.raise_for_failures()
        return pending.written

    def close(self) -> None:
        """Deliver what is queued, then stop serving reports."""
        self._producer.flush(self._timeout_s)
        self._stop.set()
        self._poller.join(5)

    def _serve_reports(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)
