"""The de-duplication memory against a plain dict, with runs, merges and prefilter forced small."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.ingestion import dedup
from services.ingestion.dedup import PartitionMemory


@pytest.fixture(autouse=True)
def _small_structures(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # A run every 4 ids, at most 3 runs, and a prefilter of one 64-bit word that cannot rule
    # much out: every path (merges, the run cap, searches after a "perhaps") is taken often.
    monkeypatch.setattr(dedup, "SETTLE_EVERY", 4)
    monkeypatch.setattr(dedup, "MAX_RUNS", 3)
    monkeypatch.setattr(dedup, "LOOKUP", 3)
    monkeypatch.setattr(dedup, "_MIN_FILTER_BITS", 64)
    monkeypatch.setattr(dedup, "FILTER_BITS_PER_ID", 2)
    yield


ids = st.sampled_from([f"id-{i}" for i in range(40)])
operations = st.lists(
    st.one_of(
        st.tuples(st.just("accept"), st.lists(ids, max_size=12), st.floats(0, 3)),
        st.tuples(st.just("forget"), st.just([]), st.floats(0, 3)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(operations)
def test_without_the_cap_it_answers_exactly_like_a_dict_of_accepted_ids(
    ops: list[tuple[str, list[str], float]],
) -> None:
    window = 5.0
    memory = PartitionMemory(window_s=window, max_ids=1_000_000)
    reference: dict[str, tuple[int, float]] = {}
    now, offset = 0.0, 0
    for kind, batch, step in ops:
        now += step
        if kind == "forget":
            old = [e for e, (_, t) in reference.items() if t < now - window]
            for e in old:
                del reference[e]
            assert memory.forget_before(now) == len(old)
        else:
            keys = [hash(e) for e in batch]
            offsets = list(range(offset, offset + len(batch)))
            offset += len(batch)
            expected = len(batch)
            for i, e in enumerate(batch):  # accept_new: in order, up to the first known
                if e in reference:
                    expected = i
                    break
                reference[e] = (offsets[i], now)
            assert memory.accept_new(keys, offsets, now) == expected
        assert len(memory) == len(reference)
        everyone = [f"id-{i}" for i in range(40)]
        assert memory.known([hash(e) for e in everyone]) == [e in reference for e in everyone]
        for e in everyone:
            assert memory.accepted_at(e) == (reference[e][0] if e in reference else None)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(0, 8), max_size=12), max_size=30))
def test_at_the_cap_it_keeps_the_latest_forgets_the_earliest_and_counts_them(
    batches: list[list[int]],
) -> None:
    cap = 20
    memory = PartitionMemory(window_s=1e9, max_ids=cap)
    accepted: dict[str, int] = {}  # id -> its batch, in order of acceptance
    for n, batch in enumerate(batches):
        names = [f"b{n}-{v}" for v in batch]  # repeats within a batch only: the first wins
        memory.accept_all(names, n, at_s=float(n))
        accepted.update((name, n) for name in names if name not in accepted)
        assert len(memory) <= cap + dedup.SETTLE_EVERY  # the recent ones settle at 4
        memory.forget_before(float(n))  # settles: now the cap holds exactly
        assert len(memory) <= cap
        assert memory.cut_short + len(memory) == len(accepted)  # each kept or counted
        kept = {e: at for e, at in accepted.items() if memory.accepted_at(e) is not None}
        assert len(kept) == len(memory)
        assert all(memory.accepted_at(e) == at for e, at in kept.items())
        forgotten = [at for e, at in accepted.items() if e not in kept]
        if kept and forgotten:  # the earliest go (ties within a batch either way)
            assert max(forgotten) <= min(kept.values())


def test_forgotten_ids_are_rebuilt_out_of_the_prefilter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dedup, "_MIN_FILTER_BITS", 1 << 16)
    monkeypatch.setattr(dedup, "FILTER_BITS_PER_ID", 16)
    memory = PartitionMemory(window_s=10.0, max_ids=1_000_000)
    first = [f"old-{i}" for i in range(20_000)]
    memory.accept_all(first, 0, at_s=0.0)
    memory.forget_before(0.0)
    assert all(memory.known([hash(e) for e in first]))
    assert memory.forget_before(100.0) == len(first)  # all past the window
    memory.accept_all(["new"], 1, at_s=100.0)
    memory.forget_before(100.0)
    keys = np.fromiter((hash(e) for e in first), dtype=np.int64)
    # the forgotten ids outnumbered the live one: the bitmap was rebuilt without them
    assert int(memory._filter.maybe(keys).sum()) < len(first) // 100
    assert not any(memory.known([hash(e) for e in first]))
    assert memory.accepted_at("new") == 1


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=50, unique=True),
    st.lists(st.integers(-(2**63), 2**63 - 1), max_size=50),
)
def test_the_prefilter_never_rules_out_a_held_key_one_at_a_time_or_at_once(
    held: list[int], asked: list[int]
) -> None:
    prefilter = dedup._Prefilter()
    prefilter.add(np.sort(np.array(held, dtype=np.int64)))
    for keys in (held, asked):
        at_once = prefilter.maybe(np.array(keys, dtype=np.int64)).tolist()
        assert at_once == [prefilter.may_hold(key) for key in keys]
    assert all(prefilter.maybe(np.array(held, dtype=np.int64)))


def test_the_prefilter_grows_with_the_ids_and_a_nan_time_costs_only_its_own_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dedup, "_MIN_FILTER_BITS", 1 << 16)
    monkeypatch.setattr(dedup, "FILTER_BITS_PER_ID", 32)
    memory = PartitionMemory(window_s=10.0, max_ids=1_000_000)
    sizes = []
    for n in range(4):
        memory.accept_all([f"b{n}-{i}" for i in range(5000)], n, at_s=100.0)
        memory.forget_before(100.0)
        sizes.append(memory._filter._words.size * 64)
    assert sizes[-1] >= 32 * len(memory) > sizes[0]  # rebuilt larger as the ids came
    memory.accept("no-time", 9, at_s=float("nan"))
    assert memory.forget_before(100.0) == 1  # only the id without a usable time
    assert memory.accepted_at("b0-0") == 0 and len(memory) == 20_000


@settings(max_examples=150, deadline=None)
@given(operations, st.sampled_from([12, 1_000_000]))
def test_without_numba_it_answers_exactly_as_with_it(
    ops: list[tuple[str, list[str], float]], cap: int
) -> None:
    pytest.importorskip("numba")  # else both sides are numpy: nothing compared
    compiled = PartitionMemory(window_s=5.0, max_ids=cap)
    plain = PartitionMemory(window_s=5.0, max_ids=cap)
    kernels = dedup._merge, dedup._set_bits
    now, offset = 0.0, 0
    for kind, batch, step in ops:
        now += step
        answers = []
        for memory, (merge, set_bits) in ((compiled, kernels), (plain, (None, None))):
            dedup._merge, dedup._set_bits = merge, set_bits
            try:
                if kind == "forget":
                    answers.append(memory.forget_before(now))
                else:
                    keys = [hash(e) for e in batch]
                    offsets = list(range(offset, offset + len(batch)))
                    answers.append(memory.accept_new(keys, offsets, now))
            finally:
                dedup._merge, dedup._set_bits = kernels
        offset += len(batch)
        everyone = [f"id-{i}" for i in range(40)]
        assert answers[0] == answers[1]
        assert len(compiled) == len(plain) and compiled.cut_short == plain.cut_short
        assert [compiled.accepted_at(e) for e in everyone] == [
            plain.accepted_at(e) for e in everyone
        ]


def test_no_run_outgrows_its_ceiling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dedup, "MAX_RUNS", 1000)  # only the binary counter merges
    cap = 1000  # runs of at most 128 ids: 4 doubled five times
    memory = PartitionMemory(window_s=1e9, max_ids=cap)
    for n in range(300):
        memory.accept_all([f"b{n}-{i}" for i in range(7)], n, at_s=float(n))
        assert max((len(run) for run in memory._runs), default=0) <= 128
    memory.forget_before(300.0)
    assert len(memory) <= cap and len(memory._runs) >= cap // 128
    assert all(memory.accepted_at(f"b299-{i}") == 299 for i in range(7))
    assert dedup._run_ceiling(3_000_000) == 524_288 and dedup._run_ceiling(1000) == 128


extremes = st.sampled_from([-(2**63), -1, 0, 1, 2**63 - 1])
any_key = st.one_of(extremes, st.integers(-(2**63), 2**63 - 1))


@settings(max_examples=100, deadline=None)
@given(st.lists(any_key, max_size=300, unique=True))
def test_the_compiled_prefilter_sets_the_bits_numpy_sets(keys: list[int]) -> None:
    pytest.importorskip("numba")
    words = []
    for set_bits in (dedup._set_bits, None):
        prefilter = dedup._Prefilter()
        prefilter._reset(live=100_000)  # many words: a wrong word index shows
        assert prefilter._words.size >= 1024
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(dedup, "_set_bits", set_bits)
            prefilter.add(np.sort(np.array(keys, dtype=np.int64)))
        words.append(prefilter._words)
    np.testing.assert_array_equal(words[0], words[1])


times = st.one_of(st.floats(0, 100), st.just(float("nan")))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(any_key, times), min_size=2, max_size=40, unique_by=lambda pair: pair[0]),
    st.integers(1, 39),
)
def test_the_compiled_merge_gives_numpys_run(pairs: list[tuple[int, float]], split: int) -> None:
    pytest.importorskip("numba")
    split = min(split, len(pairs) - 1)  # runs are never empty
    older, newer = (_run(part) for part in (pairs[:split], pairs[split:]))
    merged, expected = older.merged_with(newer), older._merged_in_numpy(newer)
    for got, want in zip(
        (merged.keys, merged.offsets, merged.times),
        (expected.keys, expected.offsets, expected.times),
        strict=True,
    ):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    assert (merged.oldest, merged.newest) == (expected.oldest, expected.newest)


def _run(pairs: list[tuple[int, float]]) -> dedup._Run:
    pairs = sorted(pairs)
    keys = np.array([k for k, _ in pairs], dtype=np.int64)
    offsets = np.arange(len(pairs), dtype=np.int64) * 7
    return dedup._Run(keys, offsets, np.array([t for _, t in pairs], dtype=np.float64))
