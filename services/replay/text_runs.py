"""Language-model runs over a slice: the trainer's text learner, decoder and mini-batch cuts.

A `TextRun` is one language-model config (`TextModelConfig`) learning the text records of
a slice test-then-train, exactly as a trainer of a text stream would (the same
`TextLearner`, `texts_of` and `Batcher`): bits per byte, next-byte accuracy and, with
held-out texts, each domain's bits per byte and forgetting, recorded every `every` events
as a learning curve. Backtests of several configs over a two-domain text stream compare
forgetting with and without replay, EWC or distillation (the teacher, a registered
version, is loaded by the caller) side by side. Label delays apply to labelled tabular
samples: they are refused here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Message

from services.replay.runs import learn_by_points, stream_filter
from services.trainer.batching import Batcher
from services.trainer.text.config import TextModelConfig
from services.trainer.text.distill import Teacher
from services.trainer.text.learner import TextLearner
from services.trainer.text.stream import texts_of
from shared.errors import ConfigError


@dataclass
class TextRun:
    """One language-model config learning a slice; `curve` holds (events, metrics) points."""

    name: str
    config: TextModelConfig
    every: int = 1000
    streams: frozenset[str] = frozenset()
    teacher: Teacher | None = None  # the distillation teacher (`config.distill`)
    learner: TextLearner = field(init=False)
    curve: list[dict[str, float]] = field(default_factory=list)
    _batcher: Batcher = field(init=False)
    next_point: int = field(init=False, default=0)  # events at the next curve point

    def __post_init__(self) -> None:
        if self.config.distill is not None and self.teacher is None:
            raise ConfigError(
                f"{self.name}: a distilled config replays with its teacher from the registry"
            )
        self.learner = TextLearner(self.config, "cpu", self.teacher)
        self._batcher = Batcher(self.config.batch_size, stream_filter(self.streams))
        self.next_point = self.every

    @property
    def events(self) -> int:
        """Records learned, skipped, refused or held out."""
        text = self.learner
        return text.events + text.skipped + text.refused + text.held_out

    def feed(self, records: Sequence[Message]) -> None:
        """Learn from the next records of the slice, in order, up to each curve point."""
        for segment in self._batcher.add(records):
            self._learn(*texts_of(segment))

    def _learn(self, texts: list[bytes], domains: list[str], labels: list[int]) -> None:
        """Test-then-train on a segment's texts, up to each curve point."""

        def learn(start: int, stop: int) -> None:
            part = slice(start, stop)
            self.learner.learn(texts[part], domains[part], labels[part])

        learn_by_points(self, len(texts), self.config.batch_size, learn)

    def finish(self) -> None:
        """Record the final point."""
        final = self.snapshot()
        if not self.curve or self.curve[-1]["events"] != final["events"]:
            self.curve.append(final)

    def snapshot(self) -> dict[str, float]:
        """Prequential metrics, per-domain scores and the event count now."""
        scores = self.learner.snapshot() | self.learner.domain_scores()
        return scores | {"events": float(self.events)}

    def score(self, metric: str) -> float:
        """The run's current value of `metric` (inf when it has none yet)."""
        value = self.snapshot().get(metric)
        return math.inf if value is None or math.isnan(value) else value

    def report(self) -> dict[str, Any]:
        """The run as JSON-ready data (`final`: the metrics at the end)."""
        return {
            "name": self.name,
            "config": self.config.model_dump(mode="json"),
            "config_hash": self.config.hash(),
            "applied": self.learner.events,
            "skipped": self.learner.skipped + self.learner.refused + self.learner.held_out,
            "stream_revision": None,
            "label_delay": None,
            "final": self.snapshot(),
            "stopped_at": None,
            "curve": self.curve,
        }
