"""What a language model keeps of past events: a replay reservoir and held-out text per domain.

Continual learning forgets: a model trained on one domain, then another, loses what it knew
of the first. Two pieces measure and limit that, both crash-exact (their state goes into
checkpoints as tensors and plain types):

- `Reservoir`: a uniform sample of every event seen so far, of bounded size (Vitter's
  algorithm R), from which each optimiser step mixes in past texts (`replay_ratio`).
- `Holdout`: every `every`-th event of each domain (the sample's `domain` attribute) is set
  aside, not learned, up to `size` per domain (`max_domains` domains at most); the model's
  bits per byte on each domain's held-out texts, measured at the end of each window of
  learned events (`DomainWindows`), give forgetting (current minus best) and backward
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


MAX_DOMAIN_CHARS = 64  # a domain name longer than this is cut (names become metric keys)


def domain_name(raw: str) -> str:
    """The domain a sample names, cut to `MAX_DOMAIN_CHARS`."""
    return raw[:MAX_DOMAIN_CHARS]


class DomainWindows:
    """Which domain the stream is on: the most frequent of each window of learned events.

    A switch is a change of that dominant domain from one window to the next, so traffic
    that interleaves domains event by event is one mixture, not a switch per event; the
    judgement falls at fixed event counts, the same in a run restored from a checkpoint.
    """

    def __init__(self, window: int) -> None:
        self.window = window
        self.tally: dict[str, int] = {}
        self.dominant = ""  # of the last closed window ("" before the first)

    def learned(self, domain: str) -> tuple[bool, str | None]:
        """Count one learned event: (a window closed, the domain left if it switched)."""
        self.tally[domain] = self.tally.get(domain, 0) + 1
        if sum(self.tally.values()) < self.window:
            return False, None
        counted = sorted(self.tally.items(), key=lambda item: (-item[1], item[0]))
        self.tally = {}
        left, self.dominant = self.dominant, counted[0][0]
        return True, left if left and left != self.dominant else None

    def state(self) -> dict[str, Any]:
        """Plain types."""
        return {"tally": dict(self.tally), "dominant": self.dominant}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from `state()`."""
        self.tally = {str(d): int(n) for d, n in state["tally"].items()}
        self.dominant = str(state["dominant"])


class Holdout:
    """Held-out texts of at most `max_domains` domains, and the bookkeeping of forgetting.

    Every held-out set is evaluated once per closed domain window (`DomainWindows`); the
    scores reported are those of the last evaluation, so reading them costs nothing and
    a restored run reports what an uninterrupted one does. A domain's best is its lowest
    evaluated score; its "left at" score the one of the last window it was dominant in.
    """

    def __init__(self, every: int, size: int, max_domains: int = 16) -> None:
        self.every = every
        self.size = size
        self.max_domains = max_domains
        self.texts: dict[str, list[bytes]] = {}
        self.counts: dict[str, int] = {}  # events seen per tracked domain
        self.latest: dict[str, float] = {}
        self.best: dict[str, float] = {}
        self.left_at: dict[str, float] = {}
        self.current = ""  # the dominant domain at the last evaluation

    def hold(self, domain: str, text: bytes) -> bool:
        """Whether this event is set aside (every `every`-th of its domain, while room).

        Past `max_domains` tracked domains, events of new ones are learned, never held.
        """
        if not self.every:
            return False
        if domain not in self.counts and len(self.counts) >= self.max_domains:
            return False
        seen = self.counts.get(domain, 0)
        self.counts[domain] = seen + 1
        kept = self.texts.get(domain, [])
        if seen % self.every != self.every - 1 or len(kept) >= self.size:
            return False
        self.texts[domain] = [*kept, text]
        return True

    def evaluate(self, evaluate: Evaluate, dominant: str, left: str | None) -> None:
        """Score every held-out set now (a domain window closed on `dominant`).

        The domain `left` is remembered as it was at the end of the last window it was
        dominant in: the window that shows a switch has already learned from the next one.
        """
        before = dict(self.latest)
        for domain, texts in sorted(self.texts.items()):
            score = evaluate(texts)
            self.latest[domain] = score
            self.best[domain] = min(score, self.best.get(domain, score))
        if left is not None and left in self.latest:
            self.left_at[left] = before.get(left, self.latest[left])
        self.current = dominant

    def scores(self) -> dict[str, float]:
        """Per domain: bits per byte at the last evaluation, forgetting; backward transfer."""
        out: dict[str, float] = {}
        transfer = []
        for domain in sorted(self.latest):
            now = self.latest[domain]
            out[f"domain_bits_per_byte.{domain}"] = now
            out[f"forgetting.{domain}"] = now - self.best[domain]
            if domain != self.current and domain in self.left_at:
                transfer.append(self.left_at[domain] - now)
        if transfer:  # > 0: the domains left behind got better since; < 0: forgotten
            out["backward_transfer"] = float(np.mean(transfer))
        return out

    def state(self) -> dict[str, Any]:
        """Held-out texts and the scores kept so far."""
        return {
            "texts": {d: pack(t) for d, t in self.texts.items()},
            "counts": dict(self.counts),
            "latest": dict(self.latest),
            "best": dict(self.best),
            "left_at": dict(self.left_at),
            "current": self.current,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from `state()`."""
        self.texts = {d: unpack(t) for d, t in state["texts"].items()}
        self.counts = {d: int(c) for d, c in state["counts"].items()}
        self.latest = {d: float(s) for d, s in state["latest"].items()}
        self.best = {d: float(s) for d, s in state["best"].items()}
        self.left_at = {d: float(s) for d, s in state["left_at"].items()}
        self.current = str(state["current"])
