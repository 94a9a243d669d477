"""Learning runs over a slice: the trainer's own learner, decoder and mini-batch cuts.

A `Run` is one trainer config learning test-then-train from records, exactly as the live
trainer would (same `Learner`, same `decode`, the same `Batcher`: the records of its streams
only, mini-batches cut per partition), recording its
prequential metrics every `every` events as a learning curve. Runs are transport-free:
they take record chunks, wherever those come from.

A run of a stream with a feature schema is given the stream's definition (from the catalog
at the time of the replay, or the one a version's lineage pinned): its config is reconciled
with it and named records go through its featurizer, as in the trainer, so a replay of the
trainer's slice with the trainer's config reproduces the trainer's weights bit for bit.

A run given a `label_delay` serves each event before its label arrives (`delayed.py`): its
headline metrics (`snapshot`, `score`, the curve) are then the "as served" ones, and the
learner's own test-then-train metrics stay in the report as "immediate".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import Message

from services.replay.delay import LabelDelay
from services.replay.delayed import Delayed
from services.trainer.batching import Batcher, StreamFilter
from services.trainer.config import TrainerConfig
from services.trainer.decode import decode_for
from services.trainer.learner import Batch, Learner
from services.trainer.settings import reconcile
from shared.features import FeatureSpace, Featurizer
from streamlearn.v1 import stream_pb2


@dataclass
class Run:
    """One config learning a slice; `curve` holds (events, metrics) points.

    `streams` are the streams it learns, as a trainer does (other streams' records on the
    slice are skipped); empty: every record of the slice. `definition`: the stream's, whose
    schema featurizes named records (none: positional records only); `config` becomes the
    config reconciled with it (ConfigError on a contradiction). `label_delay`: when each
    event's label arrives (None: at once, test-then-train; `delayed.py` says how).
    """

    name: str
    config: TrainerConfig
    every: int = 1000
    streams: frozenset[str] = frozenset()
    definition: stream_pb2.StreamDefinition | None = None
    label_delay: LabelDelay | None = None
    learner: Learner = field(init=False)
    featurizer: Featurizer | None = field(init=False, default=None)
    curve: list[dict[str, float]] = field(default_factory=list)
    stopped_at: int | None = None  # events seen when successive halving stopped it
    _batcher: Batcher = field(init=False)
    _delayed: Delayed | None = field(init=False, default=None)
    next_point: int = field(init=False, default=0)  # events at the next curve point

    def __post_init__(self) -> None:
        self.config = reconcile(self.config, self.definition)
        definition = self.definition
        space = FeatureSpace.from_definition(definition) if definition is not None else None
        self.featurizer = Featurizer(space) if space is not None else None
        self.learner = Learner(self.config, "cpu")
        self._batcher = Batcher(self.config.batch_size, stream_filter(self.streams))
        self.next_point = self.every
        if self.label_delay is not None:
            self._delayed = Delayed(
                self.learner, self.label_delay, self.every, self.curve, self.featurizer
            )

    @property
    def events(self) -> int:
        """Events learned from plus events refused by the guard."""
        return self.learner.applied + self.learner.skipped

    def feed(self, records: Sequence[Message]) -> None:
        """Learn from the next records of the slice, in order."""
        for segment in self._batcher.add(records):
            batch, _ = decode_for(self.config, segment, self.featurizer)
            if self._delayed is not None:
                self._delayed.feed(segment, batch)
            else:
                self._learn(batch)

    def _learn(self, batch: Batch) -> None:
        """Test-then-train: learn every event of `batch` at once."""
        step = self.config.batch_size
        learn_by_points(self, len(batch), step, lambda a, b: self.learner.learn(batch.slice(a, b)))

    def finish(self) -> None:
        """Learn the held events (with a label delay) and record the final point.

        Held-back records of an unfinished mini-batch of the slice stay out, as in the
        trainer (they are not events yet).
        """
        if self._delayed is not None:
            self._delayed.finish()
        final = self.snapshot()
        if not self.curve or self.curve[-1]["events"] != final["events"]:
            self.curve.append(final)

    def snapshot(self) -> dict[str, float]:
        """The headline metrics now, with the event count: as served with a label delay."""
        if self._delayed is not None:
            return self._delayed.snapshot()
        return self.immediate()

    def immediate(self) -> dict[str, float]:
        """The learner's prequential (test-then-train) metrics now, with the event count."""
        return self.learner.scores() | {"events": float(self.events)}

    def score(self, metric: str) -> float:
        """The run's current headline value of `metric` (inf when it has none yet)."""
        metrics = self._delayed.served if self._delayed is not None else self.learner.metrics
        value = metrics.snapshot().get(metric)
        return math.inf if value is None or math.isnan(value) else value

    def report(self) -> dict[str, Any]:
        """The run as JSON-ready data (`final`: the headline metrics)."""
        out: dict[str, Any] = {
            "name": self.name,
            "config": self.config.model_dump(mode="json"),
            "config_hash": self.config.hash(),
            "applied": self.learner.applied,
            "skipped": self.learner.skipped,
            "stream_revision": self.definition.revision if self.definition is not None else None,
            "label_delay": self.label_delay.describe() if self.label_delay else None,
            "final": self.snapshot(),
            "stopped_at": self.stopped_at,
            "curve": self.curve,
        }
        if self._delayed is not None:
            out["immediate"] = self.immediate()
            out["held"] = self._delayed.held
            out["bad_delays"] = self._delayed.bad_delays
        return out


class CurvePoints(Protocol):
    """A run that records its metrics every `every` events (`learn_by_points`)."""

    every: int
    curve: list[dict[str, float]]
    next_point: int

    @property
    def events(self) -> int:
        """Events seen so far."""
        ...

    def snapshot(self) -> dict[str, float]:
        """The metrics now."""
        ...


def learn_by_points(
    run: CurvePoints, rows: int, step: int, learn: Callable[[int, int], None]
) -> None:
    """Learn rows [0, rows) through `learn(start, stop)`, recording `run`'s curve points.

    Slices end at each curve point, so points fall on multiples of `every` events, and stay
    whole mini-batches of `step`, so the grouping is the live trainer's.
    """
    start = 0
    while start < rows:
        room = max(run.next_point - run.events, 1)
        stop = start + max(room // step, 1) * step
        learn(start, stop)
        start = stop
        if run.events >= run.next_point:
            run.curve.append(run.snapshot())
            while run.next_point <= run.events:
                run.next_point += run.every


def stream_filter(streams: frozenset[str]) -> StreamFilter | None:
    """The trainer's filter of `streams`; None (every record) when no stream is named."""
    return StreamFilter(streams) if streams else None


def halving_points(total: int, configs: int, eta: int = 3) -> list[int]:
    """Event counts at which successive halving keeps the best 1/eta of the runs.

    With R = ceil(log_eta(configs)) rungs, rung r ends after total / eta**(R - r) events, so
    the survivors of each rung get eta times the budget of the one before.
    """
    if configs <= 1:
        return []
    rungs = math.ceil(math.log(configs, eta))
    return [max(1, total // eta ** (rungs - r)) for r in range(rungs)]


def prune(runs: list[Run], metric: str, lower_is_better: bool, eta: int) -> list[Run]:
    """Keep the best ceil(len/eta) runs by `metric`; mark the others stopped."""

    def key(run: Run) -> tuple[bool, float]:  # runs without the metric yet rank last
        value = run.score(metric)
        return math.isinf(value), value if lower_is_better else -value

    ranked = sorted(runs, key=key)
    keep = max(1, math.ceil(len(runs) / eta))
    for run in ranked[keep:]:
        run.stopped_at = run.events
        run.finish()
    return ranked[:keep]
