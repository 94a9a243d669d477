"""What a language model keeps of past events: a replay reservoir and held-out text per domain.

Continual learning forgets: a model trained on one domain, then another, loses what it knew
of the first. Two pieces measure and limit that, both crash-exact (their state goes into
checkpoints as tensors and plain types):

- `Reservoir`: a uniform sample of every event seen so far, of bounded size (Vitter's
  algorithm R), from which each optimiser step mixes in past texts (`replay_ratio`).
- `Holdout`: every `every`-th event of each domain (the sample's `domain` attribute) is set
  aside, not learned, up to `size` per domain; the model's bits per byte on each domain's
  held-out texts, measured now and then, give forgetting (current minus best) and backward
  transfer (how the domains left behind fare now against when they were left).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from shared.errors import IntegrityError

# The bits per byte of the model on a list of texts.
Evaluate = Callable[[list[bytes]], float]


def pack(texts: Sequence[bytes]) -> dict[str, torch.Tensor]:
    """Texts as two tensors (their bytes back to back, their lengths): checkpoint-safe."""
    data = np.frombuffer(b"".join(texts), dtype=np.uint8).copy()
    lengths = np.array([len(t) for t in texts], dtype=np.int64)
    return {"data": torch.from_numpy(data), "lengths": torch.from_numpy(lengths)}


def unpack(packed: dict[str, torch.Tensor]) -> list[bytes]:
    """The texts of `pack`."""
    data = packed["data"].numpy().tobytes()
    ends = np.cumsum(packed["lengths"].numpy())
    if len(ends) and ends[-1] != len(data):
        raise IntegrityError("packed texts and their lengths disagree")
    starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
    return [data[s:e] for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]


class Reservoir:
    """A uniform sample of at most `capacity` of the texts added so far."""

    def __init__(self, capacity: int, seed: int) -> None:
        self.capacity = capacity
        self.items: list[bytes] = []
        self.seen = 0
        self._rng = np.random.default_rng(seed)

    def add(self, texts: Sequence[bytes]) -> None:
        """Offer each text: kept with probability capacity / seen (algorithm R)."""
        for text in texts:
            self.seen += 1
            if len(self.items) < self.capacity:
                self.items.append(text)
                continue
            slot = int(self._rng.integers(self.seen))
            if slot < self.capacity:
                self.items[slot] = text

    def draw(self, k: int) -> list[bytes]:
        """`k` texts drawn uniformly, with replacement (none while empty)."""
        if not self.items or k <= 0:
            return []
        picks = self._rng.integers(len(self.items), size=k)
        return [self.items[int(i)] for i in picks]

    def state(self) -> dict[str, Any]:
        """Kept texts, count and the random stream."""
        return {"items": pack(self.items), "seen": self.seen, "rng": self._rng.bit_generator.state}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from `state()`."""
        self.items = unpack(state["items"])
        self.seen = int(state["seen"])
        self._rng.bit_generator.state = state["rng"]


class Holdout:
    """Held-out texts per domain, and the bookkeeping of forgetting.

    `current` is the domain of the latest learned event. When it changes, the domain left
    is evaluated (its "left at" score). Every evaluation updates a domain's best score.
    """

    def __init__(self, every: int, size: int) -> None:
        self.every = every
        self.size = size
        self.texts: dict[str, list[bytes]] = {}
        self.counts: dict[str, int] = {}  # events seen per domain (held out or not)
        self.best: dict[str, float] = {}
        self.left_at: dict[str, float] = {}
        self.current = ""

    def hold(self, domain: str, text: bytes) -> bool:
        """Whether this event is set aside (every `every`-th of its domain, while room)."""
        if not self.every:
            return False
        seen = self.counts.get(domain, 0)
        self.counts[domain] = seen + 1
        kept = self.texts.setdefault(domain, [])
        if seen % self.every != self.every - 1 or len(kept) >= self.size:
            return False
        kept.append(text)
        return True

    def learned(self, domain: str, evaluate: Evaluate) -> None:
        """An event of `domain` was learned: a switch from another domain scores the one left."""
        if domain == self.current:
            return
        left, self.current = self.current, domain
        if self.texts.get(left):
            self.left_at[left] = self._score(left, evaluate)

    def scores(self, evaluate: Evaluate) -> dict[str, float]:
        """Per domain: bits per byte now, forgetting; and the backward transfer."""
        out: dict[str, float] = {}
        transfer = []
        for domain in sorted(d for d, texts in self.texts.items() if texts):
            now = self._score(domain, evaluate)
            out[f"domain_bits_per_byte.{domain}"] = now
            out[f"forgetting.{domain}"] = now - self.best[domain]
            if domain != self.current and domain in self.left_at:
                transfer.append(self.left_at[domain] - now)
        if transfer:  # > 0: the domains left behind got better since; < 0: forgotten
            out["backward_transfer"] = float(np.mean(transfer))
        return out

    def _score(self, domain: str, evaluate: Evaluate) -> float:
        score = evaluate(self.texts[domain])
        self.best[domain] = min(score, self.best.get(domain, score))
        return score

    def state(self) -> dict[str, Any]:
        """Held-out texts and the scores kept so far."""
        return {
            "texts": {d: pack(t) for d, t in self.texts.items()},
            "counts": dict(self.counts),
            "best": dict(self.best),
            "left_at": dict(self.left_at),
            "current": self.current,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from `state()`."""
        self.texts = {d: unpack(t) for d, t in state["texts"].items()}
        self.counts = {d: int(c) for d, c in state["counts"].items()}
        self.best = {d: float(s) for d, s in state["best"].items()}
        self.left_at = {d: float(s) for d, s in state["left_at"].items()}
        self.current = str(state["current"])
