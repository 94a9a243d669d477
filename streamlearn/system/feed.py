"""The demo's traffic, each kind on its own thread.

`Feed`: a paced synthetic stream of labelled samples through the producer SDK.
`FeedbackFeed`: requests to inference that a simulated user clicks on, the clicks reported
as feedback through the SDK.
"""

from __future__ import annotations

import heapq
import threading
import time
import uuid
from typing import Self

import numpy as np

from shared.errors import ConfigError, NotFound, Unavailable
from shared.settings import KafkaSettings, TopicSettings
from streamlearn.client.datasets import Synthetic
from streamlearn.client.producer import SampleProducer
from streamlearn.system.clicks import SimulatedUser
from streamlearn.system.traffic import TrafficClient

KEYS = 12  # records spread over the raw topic's partitions by key


class BackgroundFeed:
    """Traffic sent by `_send` on its own thread through `producer`, until done or stopped.

    `stop` waits for the thread and every acknowledgement, and raises what `_send` raised.
    """

    def __init__(self, producer: SampleProducer, name: str) -> None:
        self._producer = producer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.error: Exception | None = None

    def start(self) -> Self:
        """Begin sending."""
        self._thread.start()
        return self

    def stop(self) -> int:
        """Stop, wait for every acknowledgement; returns the records' samples delivered."""
        self._stop.set()
        self._thread.join(30)
        if self.error is not None:
            raise self.error
        return self._producer.flush()

    def _run(self) -> None:
        try:
            self._send()
        except Exception as exc:  # surfaced by stop()
            self.error = exc

    def _send(self) -> None:
        raise NotImplementedError


class Feed(BackgroundFeed):
    """Sends `total` samples of `dataset` at `rate`/s in columnar records of 50 ms each."""

    def __init__(
        self, kafka: KafkaSettings, stream: str, dataset: Synthetic, rate: float, total: int
    ) -> None:
        super().__init__(SampleProducer(kafka=kafka, stream=stream), "feed")
        self._dataset, self._rate, self.total = dataset, rate, total
        self.sent = 0

    @property
    def drifted(self) -> bool:
        """The concept has flipped in what was sent so far."""
        return self.sent >= self._dataset.drift_every

    def _send(self) -> None:
        chunk = max(1, int(self._rate / 20))
        started = time.monotonic()
        for n, (x, y) in enumerate(self._dataset.chunks(self.total, chunk)):
            if self._stop.is_set():
                return
            self._producer.send_columns(x, y, keys=[f"demo-{n % KEYS}"] * len(x))
            self.sent += len(x)
            ahead = started + self.sent / self._rate - time.monotonic()
            if ahead > 0:
                self._stop.wait(ahead)


class FeedbackFeed(BackgroundFeed):
    """Serves `total` rows of `dataset` at `rate`/s through inference; a user clicks on them.

    Instead of labelled samples: unlabelled requests (each with its own id, so inference
    logs its rows for the joiner), and the `SimulatedUser`'s clicks as feedback through the
    SDK, each when its delay is over. A model must be served first: while none is, the feed
    sends `bootstrap` labelled samples once (none when 0) and retries its request.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: TopicSettings,
        inference: TrafficClient,
        names: tuple[str, str],
        dataset: Synthetic,
        user: SimulatedUser,
        pace: tuple[float, int],
        rows_per_request: int = 64,
        bootstrap: int = 0,
    ) -> None:
        """A feed that has not started.

        Args:
            kafka: The broker.
            topics: Its raw topic takes the bootstrap, its feedback topic the clicks.
            inference: A client of the inference server.
            names: (model served, stream of its predictions and feedback).
            dataset: Where rows come from.
            user: Who clicks.
            pace: (rows per second, rows in all).
            rows_per_request: Rows per request at most (within the server's batch size).
            bootstrap: Labelled samples to send first when nothing is served yet.

        """
        producer = SampleProducer(
            kafka=kafka, topic=topics.raw, feedback_topic=topics.feedback, stream=names[1]
        )
        super().__init__(producer, "feedback-feed")
        self._inference, (self._model, self._stream) = inference, names
        self._dataset, self._user = dataset, user
        self._rate, self.total = pace
        self._rows = max(1, min(rows_per_request, int(self._rate / 20) or 1))
        self._bootstrap = bootstrap
        self._run_id = uuid.uuid4().hex[:8]  # ids of one run never meet another's
        self._due: list[tuple[float, str]] = []
        self.sent = 0  # rows answered (and logged)
        self.clicks = 0  # feedback records queued
        self.unserved = 0  # requests refused while no version was served

    @property
    def drifted(self) -> bool:
        """The concept has flipped in what was served so far."""
        return self.sent >= self._dataset.drift_every

    def stop(self) -> int:
        """Stop, wait for every acknowledgement; returns the rows served.

        Clicks not yet due are dropped: those rows become negatives, as a user who leaves.
        """
        super().stop()
        return self.sent

    def _send(self) -> None:
        started: float | None = None
        chunks = self._dataset.chunks(self.total, self._rows)
        for n, (x, _labels) in enumerate(chunks):
            while not self._serve(f"{self._run_id}-{n}", x):
                if self._stop.wait(0.2):
                    return
            started = time.monotonic() if started is None else started
            self._give(time.monotonic())
            ahead = started + self.sent / self._rate - time.monotonic()
            if ahead > 0 and self._stop.wait(ahead):
                return
        while self._due and not self._stop.wait(max(0.0, self._due[0][0] - time.monotonic())):
            self._give(time.monotonic())

    def _serve(self, request_id: str, x: np.ndarray) -> bool:
        """One request and the user's clicks on it; False while nothing is served."""
        try:
            answer = self._inference.predict_logged(self._model, x, request_id)
        except (Unavailable, NotFound):
            self.unserved += 1
            if self._bootstrap:
                self._send_bootstrap()
            return False
        if not answer.event_ids:
            raise ConfigError(
                "inference logs no predictions: start the system with "
                "INFERENCE_LOG_PREDICTIONS=true (`streamlearn down` first)"
            )
        now = time.monotonic()
        for click in self._user.react(answer.event_ids, x, self.sent):
            heapq.heappush(self._due, (now + click.delay_s, click.event_id))
        self.sent += len(x)
        return True

    def _send_bootstrap(self) -> None:
        """Labelled samples of the concept, once: the trainer's first version comes of them."""
        x, y = next(iter(self._dataset.chunks(self._bootstrap, self._bootstrap)))
        self._producer.send_columns(x, y, keys=[f"demo-{i % KEYS}" for i in range(len(x))])
        self._producer.flush()
        self._bootstrap = 0

    def _give(self, now: float) -> None:
        """Report every click whose delay is over."""
        while self._due and self._due[0][0] <= now:
            _, event_id = heapq.heappop(self._due)
            self._producer.feedback(event_id, self._stream, label=1)
            self.clicks += 1
