"""A paced synthetic stream through the producer SDK, on its own thread (the demo's traffic)."""

from __future__ import annotations

import threading
import time

from shared.settings import KafkaSettings
from streamlearn.client.datasets import Synthetic
from streamlearn.client.producer import SampleProducer

KEYS = 12  # records spread over the raw topic's partitions by key


class Feed:
    """Sends `total` samples of `dataset` at `rate`/s in columnar records of 50 ms each."""

    def __init__(
        self, kafka: KafkaSettings, stream: str, dataset: Synthetic, rate: float, total: int
    ) -> None:
        self._producer = SampleProducer(kafka=kafka, stream=stream)
        self._dataset, self._rate, self.total = dataset, rate, total
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feed", daemon=True)
        self.sent = 0
        self.error: Exception | None = None

    @property
    def drifted(self) -> bool:
        """The concept has flipped in what was sent so far."""
        return self.sent >= self._dataset.drift_every

    def start(self) -> Feed:
        """Begin sending."""
        self._thread.start()
        return self

    def stop(self) -> int:
        """Stop, wait for every acknowledgement; returns the samples delivered."""
        self._stop.set()
        self._thread.join(30)
        if self.error is not None:
            raise self.error
        return self._producer.flush()

    def _run(self) -> None:
        chunk = max(1, int(self._rate / 20))
        started = time.monotonic()
        try:
            for n, (x, y) in enumerate(self._dataset.chunks(self.total, chunk)):
                if self._stop.is_set():
                    return
                self._producer.send_columns(x, y, keys=[f"demo-{n % KEYS}"] * len(x))
                self.sent += len(x)
                ahead = started + self.sent / self._rate - time.monotonic()
                if ahead > 0:
                    self._stop.wait(ahead)
        except Exception as exc:  # surfaced by stop()
            self.error = exc
