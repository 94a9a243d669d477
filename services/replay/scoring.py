"""Predict-only scoring of served versions on a slice (ONNX Runtime, as inference serves them)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from confluent_kafka import Message

from services.trainer.batching import StreamFilter
from services.trainer.config import TrainerConfig
from services.trainer.decode import decode
from services.trainer.metrics import Prequential
from shared.features import Featurizer

_EPS = 1e-12
# (features [n, d], hashed ids [n, k] or None) -> served outputs
Predict = Callable[[np.ndarray, np.ndarray | None], np.ndarray]


@dataclass
class Scored:
    """One version's metrics over the slice so far, and its curve every `every` events."""

    name: str
    task: str
    features: int
    predict: Predict
    every: int = 1000
    streams: frozenset[str] = frozenset()  # the version's stream(s); empty: every record
    featurizer: Featurizer | None = None  # the schema the version learned with, if any
    total: Prequential = field(init=False)
    recent: Prequential = field(init=False)
    curve: list[dict[str, float]] = field(default_factory=list)
    other_streams: int = 0  # records of other streams on the slice, not scored
    _filter: StreamFilter | None = field(init=False)

    def __post_init__(self) -> None:
        self.total = Prequential(self.task, 10_000_000)
        self.recent = Prequential(self.task, self.every)
        self._filter = StreamFilter(self.streams) if self.streams else None

    def feed(self, records: Sequence[Message]) -> None:
        """Score the next records (rows the trainer would skip are skipped here too)."""
        if self._filter is not None:
            wanted = self._filter.keep(records)
            self.other_streams += wanted.count(False)
            records = [m for m, keep in zip(records, wanted, strict=True) if keep]
        if not records:
            return
        batch, _ = decode(records, self.task, self.features, self.featurizer)
        x, y = batch.features.numpy(), batch.labels.numpy()
        # Unusable rows have no label (class -1); positional rows need every feature, while
        # a named row's NaN is a missing value the served graph imputes.
        ok = np.isfinite(y.astype(np.float64)) & (y >= 0 if self.task == "multiclass" else True)
        if self.featurizer is None:
            ok &= np.isfinite(x).all(axis=1)
        if not ok.any():
            return
        labels = y[ok]
        ids = batch.sparse.numpy()[ok] if batch.sparse is not None else None
        predictions = self.predict(x[ok], ids)
        losses = _losses(self.task, predictions, labels)
        for start in range(0, len(labels), self.every):
            part = slice(start, start + self.every)
            for metrics in (self.total, self.recent):
                metrics.update(predictions[part], labels[part], losses[part])
            self.curve.append(self.recent.snapshot() | {"events": float(self.total.events)})

    def report(self) -> dict[str, Any]:
        """JSON-ready results."""
        return {
            "name": self.name,
            "streams": sorted(self.streams),
            "other_streams": self.other_streams,
            "final": self.total.snapshot(),
            "curve": self.curve,
        }


def _losses(task: str, predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-event loss as the trainer counts it: squared error, log-loss, or -log p(label).

    In float64: float32 outputs would round 1 - 1e-12 back to 1, and a confident right
    answer would score 0 * log(0), NaN.
    """
    predictions = predictions.astype(np.float64)
    if task == "regression":
        return np.asarray((predictions.reshape(-1) - labels) ** 2)
    if task == "binary":
        p = np.clip(predictions.reshape(-1), _EPS, 1 - _EPS)
        return np.asarray(-(labels * np.log(p) + (1 - labels) * np.log(1 - p)))
    picked = predictions[np.arange(len(labels)), labels.astype(int)]
    return np.asarray(-np.log(np.clip(picked, _EPS, 1.0)))


def losses_of(
    config: TrainerConfig,
    predictions: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Per-event loss of served predictions as `config`'s learner counts it, times the weight.

    Squared error, Huber (its `huber_delta`), log-loss or -log p(label).
    """
    if config.resolved_loss == "huber":
        error = np.abs(predictions.reshape(-1).astype(np.float64) - labels)
        delta = config.huber_delta
        raw = np.where(error < delta, 0.5 * error**2, delta * (error - 0.5 * delta))
    else:
        raw = _losses(config.task, predictions, labels)
    return np.asarray(raw if weights is None else raw * weights)
