"""Prequential bits per byte and next-byte accuracy, in total and over the latest events.

Each event is scored with the model as it was before learning from it. Bits per byte is
the sum of -log2 p(byte) over the bytes predicted, divided by their number: 8 is a uniform
guess over 256 values, 0 a certain and right one.
"""

from __future__ import annotations

import numpy as np

from shared.errors import IntegrityError


class TextPrequential:
    """Running totals, and a ring of the last `window` events' bits, bytes and hits."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.events = 0
        self.bytes = 0
        self.bits = 0.0
        self.hits = 0
        self._bits = np.zeros(window, dtype=np.float64)
        self._bytes = np.zeros(window, dtype=np.int64)
        self._hits = np.zeros(window, dtype=np.int64)

    def update(self, bits: np.ndarray, nbytes: np.ndarray, hits: np.ndarray) -> None:
        """Record events in order: their bits (float64), predicted bytes and right guesses."""
        n = len(bits)
        keep = min(n, self.window)  # only the last `window` of them stay in the ring
        index = (self.events + np.arange(n - keep, n)) % self.window
        self._bits[index] = bits[n - keep :]
        self._bytes[index] = nbytes[n - keep :]
        self._hits[index] = hits[n - keep :]
        self.events += n
        self.bytes += int(nbytes.sum())
        self.bits += float(bits.sum())
        self.hits += int(hits.sum())

    def snapshot(self) -> dict[str, float]:
        """Totals and recent-window metrics (empty before the first event)."""
        if self.events == 0:
            return {}
        n = min(self.events, self.window)
        recent = int(self._bytes[:n].sum())
        return {
            "events": float(self.events),
            "bytes": float(self.bytes),
            "bits_per_byte": self.bits / self.bytes,
            "accuracy": self.hits / self.bytes,
            "window_events": float(n),
            "window_bits_per_byte": float(self._bits[:n].sum()) / recent,
            "window_accuracy": float(self._hits[:n].sum()) / recent,
        }

    def state(self) -> dict[str, object]:
        """Plain types only (checkpoints load with torch's weights-only unpickler)."""
        return {
            "events": self.events,
            "bytes": self.bytes,
            "bits": self.bits,
            "hits": self.hits,
            "ring_bits": self._bits.tolist(),
            "ring_bytes": self._bytes.tolist(),
            "ring_hits": self._hits.tolist(),
        }

    def restore(self, state: dict[str, object]) -> None:
        """Continue from `state()`; IntegrityError when it does not fit this window."""
        try:
            ring_bits = np.asarray(state["ring_bits"], dtype=np.float64)
            ring_bytes = np.asarray(state["ring_bytes"], dtype=np.int64)
            ring_hits = np.asarray(state["ring_hits"], dtype=np.int64)
            totals = (
                int(state["events"]),  # type: ignore[call-overload]
                int(state["bytes"]),  # type: ignore[call-overload]
                float(state["bits"]),  # type: ignore[arg-type]
                int(state["hits"]),  # type: ignore[call-overload]
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(f"malformed text metrics state: {exc}") from exc
        if any(ring.shape != (self.window,) for ring in (ring_bits, ring_bytes, ring_hits)):
            raise IntegrityError(f"text metrics state does not fit a window of {self.window}")
        self.events, self.bytes, self.bits, self.hits = totals
        self._bits, self._bytes, self._hits = ring_bits, ring_bytes, ring_hits
