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
acceptance time, in sorted numpy arrays: 24 bytes per id (about 23 MiB per million ids),
plus a membership prefilter of 32-64 bits per id (16 MiB at the cap) and a dict of the ids
accepted since the last merge (at most 65,536: about 7 MiB). Two different ids with the
same hash (about 1 in 10^6 for 6 million ids in the window) make the later one a false
`duplicate` dead letter, which can be redriven.
The arrays are runs, oldest first, each sorted by hash and holding the ids accepted over one
span of time: new ids become a run of their own, and two neighbours merge once the older is
no larger than the newer (a binary counter) unless the merged run would pass a ceiling: a
power of two from a settle's worth up, between an eighth and a quarter of the cap (524,288
ids at the 3M default; the cap itself when it is small). An id is thus copied about
log2(ceiling / 65,536) times, where one sorted array copied every id at every merge (~46
times at the cap), and the runs number about 8 to 16 (past MAX_RUNS the newest two merge
anyway: at most a ceiling and a settle copied). Unbounded, merging the two oldest runs or
trimming the oldest at the cap stalled the partition's routing for 100-480 ms on a quiet
box, and ingestion, with little headroom at 50,000 records/s, took seconds to catch up. A
lookup asks the prefilter first: only the few hashes it cannot rule out are searched in the
runs (the more runs, the more searches for those few). Merges and the prefilter's bits are
compiled (numba): rebuilding the prefilter still visits every live id, 3M in about 10 ms.
At most `max_ids` ids are kept: beyond it the earliest accepted are forgotten before their
window ends (whole runs from the oldest, then the earliest by time in the next: with times
that step back, as a clock may, the order of runs decides), down to 1/16 below the cap at
once (`cut_short` counts them, exported as a metric), so memory is bounded whatever the rate.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Collection
from typing import Any

import numpy as np

numba: Any
try:
    import numba
except ImportError:  # a dependency, but like `scan` the memory works without it: numpy
    numba = None

# Ids accepted into the dict before they become a run: each run costs every lookup a
# search, and each merge copies its runs (24 B an id).
SETTLE_EVERY = 65_536
# Past the cap, the earliest ids are forgotten down to this fraction below it at once, not
# a merge's worth at every merge (each eviction copies the run it trims).
EVICT_BELOW = 1 / 16
LOOKUP = 512  # ids looked up in the arrays at once by `accept_new`
# Merges stop at a ceiling of 1/RUNS_AT_CAP to 2/RUNS_AT_CAP of the cap (`_run_ceiling`), so
# no merge or trim copies more than that (see the module's doc).
RUNS_AT_CAP = 8
# Runs kept at most. Runs that stopped merging hold more than half the ceiling each (up to
# 2 * RUNS_AT_CAP of them at the cap, ~11 at the default), the binary counter keeps
# ~log2(ceiling / SETTLE_EVERY) + 1 below them, and small settles of shrinking size (a slow
# stream, settled at each housekeeping) would not merge: past this many the newest two merge
# anyway (a ceiling and a settle copied at most). Each run is one more search for the few
# hashes the prefilter cannot rule out.
MAX_RUNS = 16
# The prefilter has at least this many bits per live id (a power of two: 32 to 64), so
# about 2-3% of new ids (up to 6% while as many forgotten ids linger) need a search: each
# search walks every run's binary tree, a cache miss a level (16 bits: twice the searches).
FILTER_BITS_PER_ID = 32
_MIN_FILTER_BITS = 1 << 16
_SIGN = np.uint64(1 << 63)


class _Run:
    """Ids accepted over one span of time, sorted by hash, with their offsets and times."""

    __slots__ = ("keys", "newest", "offsets", "oldest", "times")

    def __init__(self, keys: np.ndarray, offsets: np.ndarray, times: np.ndarray) -> None:
        self.keys, self.offsets, self.times = keys, offsets, times
        self.oldest, self.newest = float(times.min()), float(times.max())
        if math.isnan(self.oldest):  # a NaN time (none today) is older than any cutoff:
            self.oldest = -math.inf  # the run goes through the mask, which drops that id
            timed = times[~np.isnan(times)]
            self.newest = float(timed.max()) if len(timed) else -math.inf

    def __len__(self) -> int:
        return len(self.keys)

    def holds(self, keys: np.ndarray) -> np.ndarray:
        """For each key, whether it is here."""
        at = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return self.keys[at] == keys  # type: ignore[no-any-return]

    def keep(self, mask: np.ndarray) -> _Run:
        return _Run(self.keys[mask], self.offsets[mask], self.times[mask])

    def merged_with(self, newer: _Run) -> _Run:
        """One run of both (their keys are distinct: an id is kept once)."""
        if _merge is None:
            return self._merged_in_numpy(newer)
        size = len(self.keys) + len(newer.keys)
        merged = [np.empty(size, dtype=a.dtype) for a in (self.keys, self.offsets, self.times)]
        _merge(self.keys, self.offsets, self.times, newer.keys, newer.offsets, newer.times, *merged)
        out = _Run.__new__(_Run)  # the times' bounds are both runs': no pass over them
        out.keys, out.offsets, out.times = merged
        out.oldest, out.newest = min(self.oldest, newer.oldest), max(self.newest, newer.newest)
        return out

    def _merged_in_numpy(self, newer: _Run) -> _Run:
        """`merged_with` without numba.

        The newer keys' places are found once and shared by the three arrays, each written
        once (np.insert would sort the places again for each array).
        """
        size = len(self.keys) + len(newer.keys)
        places = np.searchsorted(self.keys, newer.keys)
        places += np.arange(len(newer.keys))
        older = np.ones(size, dtype=bool)
        older[places] = False
        arrays = []
        for mine, theirs in (
            (self.keys, newer.keys),
            (self.offsets, newer.offsets),
            (self.times, newer.times),
        ):
            out = np.empty(size, dtype=mine.dtype)
            out[places] = theirs
            out[older] = mine
            arrays.append(out)
        return _Run(*arrays)


class _Prefilter:
    """A bitmap of the hashes' top bits: a clear bit proves a hash absent (no false 'no').

    Forgotten ids leave their bits set (only a search more) until the bitmap is rebuilt,
    once they outnumber the live ids or the live ids outgrow it.
    """

    def __init__(self) -> None:
        self._reset(0)

    def _reset(self, live: int) -> None:
        size = _MIN_FILTER_BITS
        while size < (live + live // 4) * FILTER_BITS_PER_ID:  # room to grow before rebuilding
            size *= 2
        self._shift = np.uint64(64 - size.bit_length() + 1)
        self._words = np.zeros(size // 64, dtype=np.uint64)
        self._capacity = size // FILTER_BITS_PER_ID  # live ids before it is rebuilt larger
        self._lingering = 0  # forgotten ids whose bits are still set

    def _slots(self, keys: np.ndarray) -> np.ndarray:
        # the top bits, order-preserving: sorted keys give sorted slots
        return (keys.view(np.uint64) ^ _SIGN) >> self._shift

    def add(self, sorted_keys: np.ndarray) -> None:
        """Set the bits of these keys (sorted, so each word is or-ed once)."""
        if not len(sorted_keys):
            return
        if _set_bits is not None:
            _set_bits(self._words, sorted_keys.view(np.uint64), self._shift)
            return
        slots = self._slots(sorted_keys)
        words = slots >> np.uint64(6)
        bits = np.left_shift(np.uint64(1), slots & np.uint64(63))
        first = np.flatnonzero(np.concatenate(([True], words[1:] != words[:-1])))
        self._words[words[first]] |= np.bitwise_or.reduceat(bits, first)

    def maybe(self, keys: np.ndarray) -> np.ndarray:
        """For each key, False if it was never added (True: perhaps)."""
        slots = self._slots(keys)
        bits = self._words[slots >> np.uint64(6)] >> (slots & np.uint64(63))
        return (bits & np.uint64(1)).astype(bool)  # type: ignore[no-any-return]

    def may_hold(self, key: int) -> bool:
        """`maybe` for one key (a Python int: its unsigned form is key + 2**63)."""
        slot = (key + (1 << 63)) >> int(self._shift)
        return bool((int(self._words[slot >> 6]) >> (slot & 63)) & 1)

    def forgot(self, count: int, runs: list[_Run]) -> None:
        """`count` ids were removed from `runs`: rebuild once the lingering bits dominate."""
        self._lingering += count
        live = sum(len(run) for run in runs)
        if self._lingering > max(live, _MIN_FILTER_BITS // FILTER_BITS_PER_ID):
            self.rebuild(runs)

    def grew(self, runs: list[_Run]) -> None:
        """Rebuild larger once the live ids have fewer than `FILTER_BITS_PER_ID` bits each."""
        if sum(len(run) for run in runs) > self._capacity:
            self.rebuild(runs)

    def rebuild(self, runs: list[_Run]) -> None:
        self._reset(sum(len(run) for run in runs))
        for run in runs:
            self.add(run.keys)


class PartitionMemory:
    """Accepted event ids within a time window, plus positions routed by an earlier run."""

    def __init__(self, window_s: float, max_ids: int = 3_000_000) -> None:
        """Remember ids for `window_s` seconds, but never more than `max_ids` of them."""
        self._window_s = window_s
        self._max_ids = max_ids
        self._ceiling = _run_ceiling(max_ids)
        # Ids accepted since the last merge: hash -> raw offset, and their acceptance times
        # in the same (insertion) order. Ints and a flat array: no object per id that the
        # garbage collector tracks (a tuple per id counted toward every young collection).
        self._recent: dict[int, int] = {}
        self._recent_times = array("d")
        self._runs: list[_Run] = []  # oldest first
        self._settled = 0  # ids in the runs
        self._filter = _Prefilter()
        self._routed_before: set[tuple[int, int]] = set()
        self.cut_short = 0  # ids forgotten before their window ended (the cap)

    def __len__(self) -> int:
        return self._settled + len(self._recent)

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
        if not self._runs or not self._filter.may_hold(key):
            return None
        for run in self._runs:
            at = int(np.searchsorted(run.keys, key))
            if at < len(run) and run.keys[at] == key:
                return int(run.offsets[at])
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
        if not self._settled or not len(keys):
            return np.zeros(len(keys), dtype=bool)
        found = self._filter.maybe(keys)
        if not found.any():
            return found
        candidates = keys[found]
        hit = np.zeros(len(candidates), dtype=bool)
        for run in self._runs:
            hit |= run.holds(candidates)
        found[found] = hit
        return found

    def accept_new(self, keys: list[int], offsets: list[int], at_s: float, start: int = 0) -> int:
        """Accept ids (by key, `hash(event_id)`) from `start` on, in order, while each is new.

        Exactly `accept` for each in turn, settling at the same moments, with the settled
        ids looked up for up to `LOOKUP` keys at once. Returns the index of the first key
        that is known already (settled or accepted, perhaps earlier in `keys`), which is
        not accepted, or `len(keys)`.
        """
        if len(offsets) != len(keys):  # checked before any id is taken
            raise ValueError(f"{len(keys)} keys but {len(offsets)} offsets")
        limit = min(SETTLE_EVERY, self._max_ids)
        at = start
        while at < len(keys):
            recent, times = self._recent, self._recent_times
            chunk = keys[at : at + max(1, min(LOOKUP, limit - len(recent)))]
            chunk_offsets = offsets[at : at + len(chunk)]
            in_runs = self.settled(np.fromiter(chunk, dtype=np.int64, count=len(chunk)))
            if not in_runs.any() and recent.keys().isdisjoint(chunk):
                before = len(recent)
                recent.update(zip(chunk, chunk_offsets, strict=True))  # at once, in C
                if len(recent) - before == len(chunk):  # all new and distinct: taken
                    times.fromlist([at_s] * len(chunk))
                    at += len(chunk)
                    if len(recent) >= limit:
                        self._settle()
                    continue
                for key in chunk:  # a repeat within the chunk: undo (none was there before)
                    recent.pop(key, None)
            known = in_runs.tolist()  # one by one, up to the first id known already
            for key, offset, settled in zip(chunk, chunk_offsets, known, strict=True):
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
        return self._drop_older_than(now_s - self._window_s)

    def _settle(self) -> None:
        """Make the recent ids a run, merge neighbours of like size, then apply the cap."""
        if not self._recent:
            return
        count, recent = len(self._recent), self._recent
        keys = np.fromiter(recent, dtype=np.int64, count=count)
        offsets = np.fromiter(recent.values(), dtype=np.int64, count=count)
        times = np.frombuffer(self._recent_times, dtype=np.float64)
        self._recent, self._recent_times = {}, array("d")
        order = np.argsort(keys)
        run = _Run(keys[order], offsets[order], times[order])
        self._filter.add(run.keys)
        runs = self._runs
        runs.append(run)
        self._settled += count
        while len(runs) > 1 and (self._doubles(runs[-2], runs[-1]) or len(runs) > MAX_RUNS):
            newer = runs.pop()
            runs[-1] = runs[-1].merged_with(newer)
        self._filter.grew(runs)
        if self._settled > self._max_ids:  # ids past their window (by the newest) go first
            self._drop_older_than(max(r.newest for r in runs) - self._window_s)
        excess = self._settled - self._max_ids
        if excess > 0:  # the excess and 1/16 of the cap: exactly that many of the earliest,
            excess += int(self._max_ids * EVICT_BELOW)  # even when their times tie
            self.cut_short += excess
            self._drop_earliest(excess)

    def _doubles(self, older: _Run, newer: _Run) -> bool:
        """Whether the binary counter merges these neighbours: like sizes, under the ceiling."""
        return len(older) <= len(newer) and len(older) + len(newer) <= self._ceiling

    def _drop_older_than(self, cutoff: float) -> int:
        """Forget the ids accepted before `cutoff`; returns how many."""
        kept, dropped = [], 0
        for run in self._runs:
            if run.oldest >= cutoff:
                kept.append(run)
                continue
            if run.newest >= cutoff:
                mask = run.times >= cutoff
                kept.append(run.keep(mask))
                dropped += len(run) - len(kept[-1])
            else:
                dropped += len(run)
        if dropped:
            self._forgot(kept, dropped)
        return dropped

    def _drop_earliest(self, count: int) -> None:
        """Forget `count` ids: whole runs from the oldest, then the earliest of the next."""
        runs, left = list(self._runs), count
        while left and len(runs[0]) <= left:
            left -= len(runs.pop(0))
        if left:
            keep = np.ones(len(runs[0]), dtype=bool)
            keep[np.argpartition(runs[0].times, left - 1)[:left]] = False
            runs[0] = runs[0].keep(keep)
        self._forgot(runs, count)

    def _forgot(self, runs: list[_Run], count: int) -> None:
        self._runs = [run for run in runs if len(run)]
        self._settled -= count
        self._filter.forgot(count, self._runs)


def _run_ceiling(max_ids: int) -> int:
    """The largest run the binary counter makes.

    A settle's worth (or the cap, if smaller), doubled until it reaches max_ids / RUNS_AT_CAP.
    """
    ceiling = min(SETTLE_EVERY, max_ids)
    while ceiling * RUNS_AT_CAP < max_ids:
        ceiling *= 2
    return ceiling


def _compiled(function: Any) -> Any:
    return numba.njit(cache=True, nogil=True)(function) if numba is not None else None


def _merge_runs(
    keys: np.ndarray,
    offsets: np.ndarray,
    times: np.ndarray,
    new_keys: np.ndarray,
    new_offsets: np.ndarray,
    new_times: np.ndarray,
    out_keys: np.ndarray,
    out_offsets: np.ndarray,
    out_times: np.ndarray,
) -> None:
    """Merge two runs sorted by key into the `out_` arrays (one sequential pass)."""
    i, j, n, m = 0, 0, len(keys), len(new_keys)
    for k in range(n + m):
        if j == m or (i < n and keys[i] < new_keys[j]):
            out_keys[k], out_offsets[k], out_times[k] = keys[i], offsets[i], times[i]
            i += 1
        else:
            out_keys[k], out_offsets[k], out_times[k] = new_keys[j], new_offsets[j], new_times[j]
            j += 1


def _set_bits_of(words: np.ndarray, keys: np.ndarray, shift: np.uint64) -> None:
    """Set the prefilter bit of each key (unsigned view), as `_Prefilter._slots` places it."""
    sign, six, low = np.uint64(1 << 63), np.uint64(6), np.uint64(63)
    one = np.uint64(1)
    for key in keys:
        slot = (key ^ sign) >> shift
        words[slot >> six] |= one << (slot & low)


_merge = _compiled(_merge_runs)
_set_bits = _compiled(_set_bits_of)


def warm() -> None:
    """Compile (or load from numba's cache) the kernels now, not on a routing thread later."""
    memory = PartitionMemory(window_s=1.0, max_ids=10_000)
    for n in range(2):  # two runs of 100 ids, merged into one
        memory.accept_all([f"warm-{n}-{i}" for i in range(100)], n, at_s=0.0)
        memory.forget_before(0.0)
