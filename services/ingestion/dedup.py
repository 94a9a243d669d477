"""What one source partition has already routed: the de-duplication memory of ingestion.

Two questions are asked of it for every input row:
- was this very input (raw offset, row) routed by an earlier run? Then it is a redelivery
  after a crash or rebalance and is skipped silently: its outputs exist already.
- was another input with the same event id accepted within the window? Then it is a
  duplicate sent by a producer and goes to the dead-letter topic.
The memory is rebuilt from the output topics themselves when a partition is assigned (see
`recovery`), so it can never disagree with what was actually written.

Cost: an event id is kept as its 64-bit hash (Python's `hash`, salted per process; the
memory never leaves the process, it is rebuilt from the outputs) with its raw offset and
acceptance time, in sorted numpy arrays: 24 bytes per id (about 23 MiB per million ids,
twice that for a moment while new ids are merged in), plus a dict of the ids accepted
since the last merge (at most 65,536: about 7 MiB). Two different ids with the same hash
(about 1 in 10^6 for 6 million ids in the window) make the later one a false `duplicate`
dead letter, which can be redriven.
At most `max_ids` ids are kept: beyond it the oldest are forgotten before their window ends,
down to 1/16 below the cap at once (`cut_short` counts them, exported as a metric), so
memory is bounded whatever the rate.
"""

from __future__ import annotations

from array import array
from collections.abc import Collection

import numpy as np

# Ids accepted into the dict before they are merged into the arrays: a merge copies the
# arrays (24 B an id), so at the cap of 3 million ids merging every 16,384 cost ~30% of a
# core at 50,000 ids/s, and kept the service from sustaining that rate past the first minute.
SETTLE_EVERY = 65_536
# Past the cap, the oldest ids are forgotten down to this fraction below it at once, not a
# merge's worth at every merge (each eviction walks every id).
EVICT_BELOW = 1 / 16
LOOKUP = 512  # ids looked up in the arrays at once by `accept_new`


class PartitionMemory:
    """Accepted event ids within a time window, plus positions routed by an earlier run."""

    def __init__(self, window_s: float, max_ids: int = 3_000_000) -> None:
        """Remember ids for `window_s` seconds, but never more than `max_ids` of them."""
        self._window_s = window_s
        self._max_ids = max_ids
        # Ids accepted since the last merge: hash -> raw offset, and their acceptance times
        # in the same (insertion) order. Ints and a flat array: no object per id that the
        # garbage collector tracks (a tuple per id counted toward every young collection).
        self._recent: dict[int, int] = {}
        self._recent_times = array("d")
        self._keys = np.empty(0, dtype=np.int64)  # sorted hashes
        self._offsets = np.empty(0, dtype=np.int64)
        self._times = np.empty(0, dtype=np.float64)
        self._routed_before: set[tuple[int, int]] = set()
        self.cut_short = 0  # ids forgotten before their window ended (the cap)

    def __len__(self) -> int:
        return len(self._keys) + len(self._recent)

    def routed_before(self, offset: int, row: int) -> bool:
        """Whether an earlier run already routed this input row (a question, no change)."""
        return (offset, row) in self._routed_before

    def rows_routed_before(self, offset: int) -> list[int]:
        """The rows of the input at `offset` an earlier run routed, in order (rare: a scan)."""
        return sorted(row for at, row in self._routed_before if at == offset)

    def done_with(self, offset: int, rows: list[int]) -> None:
        """Forget these rows routed before: their redelivery was skipped (once per redelivery)."""
        for row in rows:
            self._routed_before.discard((offset, row))

    def mark_routed_before(self, offset: int, row: int) -> None:
        """Record an input row found in the outputs (recovery)."""
        self._routed_before.add((offset, row))

    def accepted_at(self, event_id: str) -> int | None:
        """The raw offset of the accepted input with this event id, if within the window."""
        key = hash(event_id)
        recent = self._recent.get(key)
        if recent is not None:
            return recent
        at = int(np.searchsorted(self._keys, key))
        if at < len(self._keys) and self._keys[at] == key:
            return int(self._offsets[at])
        return None

    def accept(self, event_id: str, offset: int, at_s: float) -> None:
        """Remember an accepted event id (the first one wins)."""
        if self.accepted_at(event_id) is None:
            self._recent[hash(event_id)] = offset
            self._recent_times.append(at_s)
            self.settle_if_due()

    # The batch interface: ids by their key (`hash(event_id)`), settled ids looked up at once.

    @property
    def any_routed_before(self) -> bool:
        """Whether some input is known to have been routed by an earlier run (recovery)."""
        return bool(self._routed_before)

    def settled(self, keys: np.ndarray) -> np.ndarray:
        """For each key (int64), whether it is among the settled ids (the recent ones aside)."""
        if not len(self._keys) or not len(keys):
            return np.zeros(len(keys), dtype=bool)
        at = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
        return np.asarray(self._keys[at] == keys)

    def accept_new(self, keys: list[int], offsets: list[int], at_s: float, start: int = 0) -> int:
        """Accept ids (by key, `hash(event_id)`) from `start` on, in order, while each is new.

        Exactly `accept` for each in turn, settling at the same moments, with the settled
        ids looked up for up to `LOOKUP` keys at once. Returns the index of the first key
        that is known already (settled or accepted, perhaps earlier in `keys`), which is
        not accepted, or `len(keys)`.
        """
        limit = min(SETTLE_EVERY, self._max_ids)
        at = start
        while at < len(keys):
            chunk = keys[at : at + LOOKUP]
            known = self.settled(np.fromiter(chunk, dtype=np.int64, count=len(chunk))).tolist()
            recent, times = self._recent, self._recent_times
            for key, offset, settled in zip(chunk, offsets[at : at + LOOKUP], known, strict=True):
                if settled or key in recent:
                    return at
                recent[key] = offset
                times.append(at_s)
                at += 1
                if len(recent) >= limit:
                    self._settle()  # the settled ids changed: look the rest up again
                    break
        return at

    def known(self, keys: list[int]) -> list[bool]:
        """For each key (`hash(event_id)`), whether its id was accepted (settled or recent)."""
        settled = self.settled(np.fromiter(keys, dtype=np.int64, count=len(keys))).tolist()
        recent = self._recent
        return [s or key in recent for s, key in zip(settled, keys, strict=True)]

    def accept_all(self, event_ids: Collection[str], offset: int, at_s: float) -> None:
        """`accept` for each id in turn (a known one is skipped), looked up in bulk."""
        keys = [hash(e) for e in event_ids]
        offsets = [offset] * len(keys)
        at = self.accept_new(keys, offsets, at_s)
        while at < len(keys):  # keys[at] is known already: the first one wins
            at = self.accept_new(keys, offsets, at_s, at + 1)

    def settle_if_due(self) -> None:
        """Merge the recent ids into the arrays once there are enough of them."""
        if len(self._recent) >= min(SETTLE_EVERY, self._max_ids):
            self._settle()

    def forget_before(self, now_s: float) -> int:
        """Drop event ids accepted longer than the window ago; returns how many."""
        self._settle()
        keep = self._times >= now_s - self._window_s
        dropped = len(keep) - int(np.count_nonzero(keep))
        if dropped:
            self._keep(keep)
        return dropped

    def _settle(self) -> None:
        """Merge the recent ids into the sorted arrays, then apply the cap."""
        if not self._recent:
            return
        count, recent = len(self._recent), self._recent
        keys = np.fromiter(recent, dtype=np.int64, count=count)
        offsets = np.fromiter(recent.values(), dtype=np.int64, count=count)
        times = np.frombuffer(self._recent_times, dtype=np.float64)
        self._recent, self._recent_times = {}, array("d")
        order = np.argsort(keys)
        at = np.searchsorted(self._keys, keys[order])
        # np.insert copies once (O(n)): cheaper than sorting everything again.
        self._keys = np.insert(self._keys, at, keys[order])
        self._offsets = np.insert(self._offsets, at, offsets[order])
        self._times = np.insert(self._times, at, times[order])
        if len(self._keys) > self._max_ids:  # ids past their window (by the newest) go first
            self._keep(self._times >= float(self._times.max()) - self._window_s)
        excess = len(self._keys) - self._max_ids
        if excess > 0:  # the excess and 1/16 of the cap: exactly that many of the oldest,
            excess += int(self._max_ids * EVICT_BELOW)  # even when their times tie
            keep = np.ones(len(self._keys), dtype=bool)
            keep[np.argpartition(self._times, excess - 1)[:excess]] = False
            self.cut_short += excess
            self._keep(keep)

    def _keep(self, mask: np.ndarray) -> None:
        self._keys = self._keys[mask]
        self._offsets = self._offsets[mask]
        self._times = self._times[mask]
