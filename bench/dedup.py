"""Ingestion's de-duplication memory beside a plain dict, filling to its cap and past it.

Both take the same stream of new event-id hashes (random int64, as Python ints, in batches
of 2,000: how ingestion's fast path hands them over) through `accept_new`:
- streamlearn: `services.ingestion.dedup.PartitionMemory` with the service's defaults (a
  3,000,000-id cap, an hour's window), sorted runs behind a prefilter, 24 B an id;
- baseline: a dict of hash -> raw offset, Python's fastest membership structure, past the
  cap dropping its oldest entries (insertion order) down to 1/16 below it at once, as the
  memory does. It keeps no acceptance time, so it could not forget by window, and skips the
  housekeeping the memory gets every 5 s of the stream's clock (50,000 ids/s).
Figures, medians of `ROUNDS` alternated rounds, each from an empty memory: ids/s while the
memory fills to its cap, ids/s once it is at the cap (each new id evicts), the longest
single call at the cap (a batch, with the housekeeping when it falls due: the partition's
routing waits that long, and at 50,000 records/s ingestion needs seconds to catch up on a
stall), and the bytes an id costs at the cap (tracemalloc of a separate fill, lower is
better; the hashes' own ints, made before, are not counted on either side: a dict in a
service would hold them too).
"""

from __future__ import annotations

import statistics
import time
import tracemalloc
from collections.abc import Callable, Iterator
from itertools import islice

import numpy as np

from bench.core import BenchContext, Figure
from services.ingestion.dedup import EVICT_BELOW, PartitionMemory

CAP = 3_000_000
BATCH = 2000
ROUNDS = 3
BATCH_S = BATCH / 50_000  # the stream's clock: 50,000 ids/s
HOUSEKEEPING_BATCHES = 125  # ingestion forgets past the window every 5 s (of that clock)
BASELINE = "dict of hash -> offset, oldest dropped past the cap (insertion order)"


class DictMemory:
    """The baseline: `accept_new` over a dict, capped by insertion order."""

    def __init__(self, max_ids: int) -> None:
        self._ids: dict[int, int] = {}
        self._max_ids = max_ids

    def __len__(self) -> int:
        return len(self._ids)

    def accept_new(self, keys: list[int], offsets: list[int], at_s: float, start: int = 0) -> int:
        """Accept keys from `start` while each is new; the index of the first known one."""
        ids = self._ids
        for at in range(start, len(keys)):
            key = keys[at]
            if key in ids:
                return at
            ids[key] = offsets[at]
        if len(ids) > self._max_ids:
            drop = len(ids) - self._max_ids + int(self._max_ids * EVICT_BELOW)
            for key in list(islice(ids, drop)):
                del ids[key]
        return len(keys)


Memory = PartitionMemory | DictMemory


def run(ctx: BenchContext) -> list[Figure]:
    """Fill and at-cap rates and bytes per id, streamlearn vs the dict."""
    cap = ctx.count(CAP)
    batches = list(_batches(3 * cap))  # fill, then twice the cap past it: evictions and rebuilds
    offsets = list(range(BATCH))
    makers: dict[str, Callable[[], Memory]] = {
        "streamlearn": lambda: PartitionMemory(window_s=3600.0, max_ids=cap),
        "dict": lambda: DictMemory(cap),
    }
    rates: dict[str, list[tuple[float, float, float]]] = {name: [] for name in makers}
    for _ in range(ROUNDS):
        for name, make in makers.items():
            rates[name].append(_fill_then_cap(make(), batches, offsets, cap))
    size = f"{cap:,}-id cap, batches of {BATCH:,} new ids"
    figures = []
    for phase, index in (("filling to the cap", 0), ("at the cap (each id evicts)", 1)):
        ours, theirs = (statistics.median(r[index] for r in rates[n]) for n in makers)
        figures.append(Figure(f"dedup {phase}: {size}", ours, "ids/s", BASELINE, theirs))
    ours, theirs = (statistics.median(r[2] for r in rates[n]) for n in makers)
    figures.append(
        Figure(
            f"dedup longest call at the cap (a batch, or a batch and housekeeping): {size}",
            ours,
            "ms",
            BASELINE,
            theirs,
            higher_is_better=False,
        )
    )
    ours_b, theirs_b = (_bytes_per_id(make(), batches, offsets, cap) for make in makers.values())
    figures.append(
        Figure(
            f"dedup memory at the cap: {size} (tracemalloc)",
            ours_b,
            "B/id",
            BASELINE,
            theirs_b,
            higher_is_better=False,
        )
    )
    return figures


def _batches(count: int) -> Iterator[list[int]]:
    rng = np.random.default_rng(7)
    for _ in range(max(1, count // BATCH)):
        yield rng.integers(-(2**63), 2**63 - 1, size=BATCH, dtype=np.int64).tolist()


def _fill_then_cap(
    memory: Memory, batches: list[list[int]], offsets: list[int], cap: int
) -> tuple[float, float, float]:
    """ids/s of the batches that fill the memory, then of those past its cap, and the
    longest call past the cap (ms)."""
    filling = max(1, cap // BATCH)
    rates, longest = [], 0.0
    clock = time.perf_counter
    for first, part in ((0, batches[:filling]), (filling, batches[filling:])):
        started = clock()
        for at, keys in enumerate(part, start=first):
            before = clock()
            _accept(memory, keys, offsets, at * BATCH_S)
            if at % HOUSEKEEPING_BATCHES == 0 and isinstance(memory, PartitionMemory):
                memory.forget_before(at * BATCH_S)  # as ingestion's housekeeping does
            if first:
                longest = max(longest, clock() - before)
        rates.append(len(part) * BATCH / (clock() - started))
    return rates[0], rates[1], longest * 1000


def _accept(memory: Memory, keys: list[int], offsets: list[int], at_s: float) -> None:
    at = memory.accept_new(keys, offsets, at_s)
    while at < len(keys):  # a repeated hash (improbable): skipped as ingestion does
        at = memory.accept_new(keys, offsets, at_s, at + 1)


def _bytes_per_id(memory: Memory, batches: list[list[int]], offsets: list[int], cap: int) -> float:
    """Traced bytes per id once the memory is at its cap (the keys' own ints excluded)."""
    tracemalloc.start()
    for at, keys in enumerate(batches[: 2 * max(1, cap // BATCH)]):
        _accept(memory, keys, offsets, at * BATCH_S)
    if isinstance(memory, PartitionMemory):
        memory.forget_before(0.0)  # settles the recent ids into the runs
    used, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return used / len(memory)
