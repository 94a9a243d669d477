"""A learner's watch over its own loss: the divergence guard and concept-drift detection.

`Guard` refuses to learn an event whose loss is far beyond anything the stream has shown:
more than `ratio` times the larger of the running level of applied losses (an EWMA) and the
loss of an uninformed prediction (log 2 for binary cross-entropy, log(classes) for
cross-entropy, the running label variance for MSE). A model whose updates overshoot
(a raw-feature regression with a learning rate too large for the features' scale) makes
losses that grow event after event; the level follows a loss at most `LEVEL_GROWTH` times
itself, so the growing losses soon cross the threshold and are counted and not learned,
and the weights stay finite instead of drifting to 1e15. Ordinary noise never comes
near the threshold: an event at the label mean is at most (n - 1) label variances away.

`DriftWatch` feeds the prequential loss of applied events to River's ADWIN or Page-Hinkley
(imported lazily) and reports where it detected a change.
"""

from __future__ import annotations

import math
import pickle
from typing import Any

import numpy as np

LEVEL_ALPHA = 0.01  # EWMA weight of the running loss level, after the first 100 updates
# A loss enters the level at most this many times the level: a model whose loss grows step
# after step cannot drag its own threshold up with it, while a stream whose scale really
# changed still moves the level (about 1% per event) and the label statistics.
LEVEL_GROWTH = 2.0


class Guard:
    """Divergence guard state: loss level, label statistics; arrays shared with the kernel."""

    def __init__(
        self, ratio: float | None, warmup: int, loss: str, outputs: int, delta: float
    ) -> None:
        self.ratio = ratio
        self.warmup = warmup
        self.loss = loss
        self.outputs = outputs
        self.delta = delta
        # level, level updates, label count, label mean, label M2 (float64: the kernel's view)
        self.values = np.zeros(5, dtype=np.float64)

    @property
    def active(self) -> bool:
        """Whether events can be refused now (on, and past the warm-up)."""
        return self.ratio is not None and self.values[1] >= self.warmup

    def observe_labels(self, labels: np.ndarray) -> None:
        """Fold the labels of the step's usable rows into the label statistics (regression).

        Chan's update; for one row it is `fused._welford` exactly (bit-identical paths).
        """
        if self.loss not in ("mse", "huber") or len(labels) == 0:
            return
        y = labels.astype(np.float64)
        count, mean, m2 = self.values[2:5]
        n_b = float(len(y))
        mean_b = y.sum() / n_b
        m2_b = float(((y - mean_b) ** 2).sum())
        total = count + n_b
        delta = mean_b - mean
        self.values[3] = mean + delta * n_b / total
        self.values[4] = m2 + m2_b + delta * delta * (count * n_b / total)
        self.values[2] = total

    def floor(self) -> float:
        """The loss of an uninformed prediction (see the module docstring)."""
        if self.loss == "bce":
            return math.log(2.0)
        if self.loss == "cross_entropy":
            return math.log(self.outputs)
        count = self.values[2]
        var = self.values[4] / count if count > 0 else 0.0
        if self.loss == "huber":
            spread = math.sqrt(var)
            if spread <= self.delta:
                return 0.5 * var
            return self.delta * (spread - 0.5 * self.delta)
        return float(var)

    def refuse(self, losses: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """Which candidate rows (unweighted losses) are diverging."""
        if not self.active or self.ratio is None:
            return np.zeros(len(losses), dtype=bool)
        limit = self.ratio * max(float(self.values[0]), self.floor())
        with np.errstate(invalid="ignore"):
            return candidates & (losses > limit)

    def learned(self, losses: np.ndarray) -> None:
        """Move the level with the mean unweighted loss of the step's applied rows."""
        if len(losses) == 0:
            return
        level = float(self.values[0])
        loss = float(losses.mean())
        if self.values[1] > 0:
            loss = min(loss, LEVEL_GROWTH * level)
        self.values[1] += 1.0
        alpha = max(1.0 / self.values[1], LEVEL_ALPHA)
        self.values[0] = level + alpha * (loss - level)

    def state(self) -> list[float]:
        """Plain floats (checkpoints load with torch's weights-only unpickler)."""
        return [float(v) for v in self.values]

    def restore(self, state: list[float]) -> None:
        """Continue from `state()`."""
        self.values[:] = np.asarray(state, dtype=np.float64)


def _detector(kind: str) -> Any:
    if kind == "off":
        return None
    from river import drift  # lazily: River is heavy and only this needs it

    if kind == "adwin":
        return drift.ADWIN()  # type: ignore[no-untyped-call]
    return drift.PageHinkley()


class DriftWatch:
    """Concept-drift detection on the prequential loss of applied events."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._detector = _detector(kind)

    def update(self, losses: np.ndarray) -> list[int]:
        """Feed losses in order; the indices (into `losses`) where a drift was detected."""
        if self._detector is None:
            return []
        found = []
        detector = self._detector
        for i, value in enumerate(losses.tolist()):
            detector.update(value)
            if detector.drift_detected:
                found.append(i)
        return found

    def state(self) -> dict[str, Any]:
        """The detector pickled to bytes (loads with torch's weights-only unpickler)."""
        data = b"" if self._detector is None else pickle.dumps(self._detector)
        return {"kind": self.kind, "detector": data}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from `state()` (a detector of another kind starts afresh)."""
        if state.get("kind") == self.kind and state.get("detector"):
            self._detector = pickle.loads(state["detector"])  # our own checkpoint
