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

`DriftWatch` feeds the prequential loss of applied events to River's ADWIN (per-chunk mean
losses, imported lazily) or a compiled copy of River's Page-Hinkley test and reports where it
detected a change.
"""

from __future__ import annotations

import math
import pickle
from typing import Any

import numba
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


# ADWIN sees the mean loss of each run of this many applied events: River's ADWIN costs a
# third of the compiled path's time per event, and checks for a change only every 32
# updates anyway. With `clock=1` it checks every chunk: a change is still found within
# 32 events of where ADWIN could see it (16 ms at 2,000 events/s).
CHUNK = 32
# River's PageHinkley defaults, run by `_page_hinkley` (River's is plain Python per event)
PH_MIN_INSTANCES, PH_DELTA, PH_THRESHOLD, PH_ALPHA = 30, 0.005, 50.0, 1 - 0.0001
# the Page-Hinkley state: n, mean, sum increase, sum decrease, min increase, max decrease,
# drift detected (1.0) at the last update
_PH_FRESH = (0.0, 0.0, 0.0, 0.0, math.inf, -1.0, 0.0)


@numba.njit(cache=True, fastmath=False)
def _page_hinkley(state: np.ndarray, losses: np.ndarray, found: np.ndarray) -> int:
    """River's `drift.PageHinkley` (mode "both") over `losses`, operation for operation.

    Writes the indices where a drift was detected into `found`; returns how many.
    """
    hits = 0
    for i in range(losses.shape[0]):
        if state[6] > 0.0:  # River resets on the update after a detection
            state[0], state[1], state[2], state[3] = 0.0, 0.0, 0.0, 0.0
            state[4], state[5], state[6] = math.inf, -1.0, 0.0
        x = losses[i]
        state[0] += 1.0
        state[1] += (1.0 / state[0]) * (x - state[1])
        dev = x - state[1]
        state[2] = PH_ALPHA * state[2] + dev - PH_DELTA
        state[3] = PH_ALPHA * state[3] + dev + PH_DELTA
        state[4] = min(state[4], state[2])
        state[5] = max(state[5], state[3])
        if state[0] >= PH_MIN_INSTANCES:
            up, down = state[2] - state[4], state[5] - state[3]
            if up > PH_THRESHOLD or down > PH_THRESHOLD:
                state[6] = 1.0
                found[hits] = i
                hits += 1
    return hits


@numba.njit(cache=True, fastmath=False)
def _chunk_means(
    pending: np.ndarray, losses: np.ndarray, means: np.ndarray, ends: np.ndarray
) -> int:
    """Sum `losses` in order into `pending` (sum, count); each full CHUNK's mean and last index.

    Sequential float64 sums: the same chunks whatever the split of the losses across calls.
    """
    full = 0
    for i in range(losses.shape[0]):
        pending[0] += losses[i]
        pending[1] += 1.0
        if pending[1] == CHUNK:
            means[full] = pending[0] / CHUNK
            ends[full] = i
            full += 1
            pending[0], pending[1] = 0.0, 0.0
    return full


def _adwin() -> Any:
    from river import drift  # lazily: River is heavy and only this needs it

    return drift.ADWIN(clock=1)  # type: ignore[no-untyped-call]


class DriftWatch:
    """Concept-drift detection on the prequential loss of applied events.

    "adwin": River's ADWIN on the mean loss of each CHUNK events; "page_hinkley": River's
    Page-Hinkley test on every loss, compiled (`_page_hinkley`); "off": nothing.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._adwin = _adwin() if kind == "adwin" else None
        self._pending = np.zeros(2, dtype=np.float64)  # sum and count of the partial chunk
        self._ph = np.array(_PH_FRESH, dtype=np.float64)

    def update(self, losses: np.ndarray) -> list[int]:
        """Feed losses in order; the indices (into `losses`) where a drift was detected."""
        values = np.ascontiguousarray(losses, dtype=np.float64)
        if self.kind == "page_hinkley":
            found = np.zeros(len(values), dtype=np.int64)
            hits: list[int] = found[: _page_hinkley(self._ph, values, found)].tolist()
            return hits
        if self._adwin is None:
            return []
        chunks = len(values) // CHUNK + 1
        means, ends = np.zeros(chunks), np.zeros(chunks, dtype=np.int64)
        full = _chunk_means(self._pending, values, means, ends)
        detector, hits = self._adwin, []
        for mean, end in zip(means[:full].tolist(), ends[:full].tolist(), strict=True):
            detector.update(mean)
            if detector.drift_detected:
                hits.append(end)
        return hits

    def state(self) -> dict[str, Any]:
        """Plain types and bytes (load with torch's weights-only unpickler).

        No detector is `None`, not `b""`: pickle writes empty bytes as a call to `bytes`,
        which the weights-only unpickler refuses (non-empty bytes go through `_codecs`).
        """
        data = None if self._adwin is None else pickle.dumps(self._adwin)
        return {
            "kind": self.kind,
            "detector": data,
            "pending": self._pending.tolist(),
            "page_hinkley": self._ph.tolist(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from `state()` (a detector of another kind starts afresh).

        A checkpoint from before chunking holds a per-event ADWIN: it continues on chunks.
        One from before the compiled Page-Hinkley (a pickled River detector) is carried over.
        """
        if state.get("kind") != self.kind:
            return
        if self.kind == "adwin" and state.get("detector"):
            self._adwin = pickle.loads(state["detector"])  # our own checkpoint
            self._adwin.clock = 1
            self._pending[:] = state.get("pending", (0.0, 0.0))
        if self.kind == "page_hinkley" and "page_hinkley" in state:
            self._ph[:] = np.asarray(state["page_hinkley"], dtype=np.float64)
        elif self.kind == "page_hinkley" and state.get("detector"):
            old = pickle.loads(state["detector"])  # our own checkpoint: River's detector
            self._ph[:] = (
                old._x_mean.n,
                old._x_mean.get(),
                old._sum_increase,
                old._sum_decrease,
                old._min_increase,
                old._max_decrease,
                float(old.drift_detected),
            )
