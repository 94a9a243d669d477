"""Prequential metrics of the prediction that was served, beside the trainer's own.

A sample the joiner made from a logged prediction and its feedback carries what the served
version answered (`Sample.served_score`). The trainer's own test-then-train score asks how
the current weights would have done; this one asks how production did: the version that
answered, at the time it answered, judged on the label that came later. The two differ by
the model's staleness and by the label delay (a version may be several updates behind).

Scored rows are those with a usable label and a served row of the model's width; the loss
is the trainer's loss on the served output (log-loss for classification, squared error or
Huber for regression), unweighted.
"""

from __future__ import annotations

import numpy as np
import torch

from services.trainer.metrics import Prequential

PREFIX = "served_"
_EPS = 1e-12


class ServedScores:
    """Prequential metrics of `Batch.served` against the labels, over the same window."""

    def __init__(self, task: str, window: int, loss: str, huber_delta: float = 1.0) -> None:
        self.task = task
        self.loss = loss
        self.huber_delta = huber_delta
        self.metrics = Prequential(task, window)

    def update(self, served: torch.Tensor | None, labels: torch.Tensor) -> None:
        """Score the rows of a batch that carry a served prediction."""
        if served is None:
            return
        scores = served.numpy().astype(np.float64)
        y = labels.numpy().astype(np.float64)
        ok = np.isfinite(scores).all(axis=1) & np.isfinite(y)
        if self.task == "multiclass":
            ok &= (y >= 0) & (y < scores.shape[1])
        if not ok.any():
            return
        scores, y = scores[ok], y[ok]
        predictions = scores if self.task == "multiclass" else scores[:, 0]
        self.metrics.update(predictions, y, self._losses(predictions, y))

    def _losses(self, predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
        losses: np.ndarray
        if self.task == "multiclass":
            picked = predictions[np.arange(len(labels)), labels.astype(int)]
            losses = -np.log(np.clip(picked, _EPS, 1.0))
        elif self.task == "binary":
            p = np.clip(predictions, _EPS, 1 - _EPS)
            losses = -(labels * np.log(p) + (1 - labels) * np.log(1 - p))
        elif self.loss == "huber":
            error, d = np.abs(predictions - labels), self.huber_delta
            losses = np.where(error <= d, 0.5 * error**2, d * (error - 0.5 * d))
        else:
            losses = (predictions - labels) ** 2
        return losses

    def snapshot(self) -> dict[str, float]:
        """The metrics, each named `served_<metric>` (empty before the first scored row)."""
        return {PREFIX + name: value for name, value in self.metrics.snapshot().items()}

    def state(self) -> dict[str, object]:
        """The metrics window, for the checkpoint (tensors: see `Prequential.state`)."""
        return self.metrics.state()

    def restore(self, state: dict[str, object]) -> None:
        """Continue from `state()`."""
        self.metrics.restore(state)
