"""The compiled ADWIN detects exactly where River's ADWIN, fed value by value, does.

Each case runs River's `drift.ADWIN()` (defaults) one value at a time and `DriftWatch("adwin")`
on the same values: the detection indices must be equal, and so must the window's width,
total and variance at the end (the same float64 rounding, not merely close). The split of
the values across `update` calls and a checkpoint (through torch's weights-only unpickler)
in the middle of the stream change nothing.
"""

from __future__ import annotations

import io
import itertools
import pickle
import time
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from river import drift

from services.trainer.drift import ADWIN_MAX_BUCKETS, ADWIN_ROWS, DriftWatch
from shared.errors import IntegrityError

CASES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def river_run(values: np.ndarray) -> tuple[list[int], Any]:
    """River's detections fed value by value, and the detector at the end."""
    adwin: Any = drift.ADWIN()  # type: ignore[no-untyped-call]
    hits = []
    for i, value in enumerate(values.tolist()):
        adwin.update(value)
        if adwin.drift_detected:
            hits.append(i)
    return hits, adwin


def assert_same_as_river(values: np.ndarray, watch: DriftWatch, hits: list[int]) -> None:
    expected, adwin = river_run(values)
    assert hits == expected
    width, total, variance = watch.state()["adwin"]["window"]
    assert (width, total, variance) == (adwin.width, adwin.total, adwin.variance)


def compiled(values: np.ndarray) -> tuple[DriftWatch, list[int]]:
    watch = DriftWatch("adwin")
    return watch, watch.update(values)


def in_pieces(values: np.ndarray, cuts: list[int]) -> tuple[DriftWatch, list[int]]:
    """`values` fed in the pieces between `cuts`; the hits as indices into `values`."""
    watch, hits = DriftWatch("adwin"), []
    bounds = [0, *sorted(cuts), len(values)]
    for start, end in itertools.pairwise(bounds):
        hits += [start + i for i in watch.update(values[start:end])]
    return watch, hits


def through_checkpoint(state: dict[str, Any]) -> dict[str, Any]:
    """`state` saved and loaded as the trainer's checkpoints are (weights-only unpickler)."""
    buffer = io.BytesIO()
    torch.save({"drift": state}, buffer)
    buffer.seek(0)
    loaded: dict[str, Any] = torch.load(buffer, weights_only=True)
    restored: dict[str, Any] = loaded["drift"]
    return restored


def steps(seed: int, lengths: list[int], means: list[float], noise: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    parts = [rng.normal(mean, noise, n) for n, mean in zip(lengths, means, strict=True)]
    return np.concatenate(parts)


@CASES
@given(
    seed=st.integers(0, 2**32 - 1),
    lengths=st.lists(st.integers(0, 3000), min_size=1, max_size=4),
    means=st.lists(st.floats(-5, 5), min_size=4, max_size=4),
    noise=st.floats(0.0, 3.0),
)
def test_step_changes_in_the_mean_are_detected_where_river_detects_them(
    seed: int, lengths: list[int], means: list[float], noise: float
) -> None:
    values = steps(seed, lengths, means[: len(lengths)], noise)
    watch, hits = compiled(values)
    assert_same_as_river(values, watch, hits)


def test_a_large_step_is_detected_at_all() -> None:
    """The comparison above is not vacuous: a clear step is found, soon after it happens."""
    values = steps(7, [3000, 3000], [0.0, 2.0], 1.0)
    watch, hits = compiled(values)
    assert_same_as_river(values, watch, hits)
    assert hits and 3000 <= hits[0] < 3200


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kind", ["bernoulli", "exponential"])
def test_noisy_losses_with_a_flip(kind: str, seed: int) -> None:
    """Losses shaped like the trainer's: 0/1 errors or log-losses; the concept flips twice."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2000, 20000))
    if kind == "bernoulli":
        low, high = rng.uniform(0.05, 0.3), rng.uniform(0.35, 0.9)
        values = np.concatenate([rng.binomial(1, p, n) for p in (low, high, low)]).astype(float)
    else:
        low, high = rng.uniform(0.1, 0.5), rng.uniform(0.6, 3.0)
        values = np.concatenate([rng.exponential(s, n) for s in (low, high, low)])
    watch, hits = compiled(values)
    assert_same_as_river(values, watch, hits)
    assert len(hits) >= 2  # both flips: several resets of the window were exercised


@pytest.mark.parametrize("seed", range(3))
def test_long_stationary_streams_raise_few_or_no_alarms(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    values = rng.exponential(0.7, 200_000)
    watch, hits = compiled(values)
    assert_same_as_river(values, watch, hits)
    assert len(hits) <= 2
    assert watch.state()["adwin"]["window"][0] > 1000  # a long window: many bucket rows


@CASES
@given(
    values=st.lists(
        st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6),
        max_size=2500,
    )
)
def test_any_finite_values_give_the_same_window_bit_for_bit(values: list[float]) -> None:
    array = np.asarray(values, dtype=np.float64)
    watch, hits = compiled(array)
    assert_same_as_river(array, watch, hits)


@CASES
@given(
    seed=st.integers(0, 2**32 - 1),
    cuts=st.lists(st.integers(0, 9000), max_size=40),
)
def test_any_split_across_update_calls_gives_the_same_detections(
    seed: int, cuts: list[int]
) -> None:
    values = steps(seed, [3000, 3000, 3000], [0.0, 1.5, 0.0], 1.0)
    whole, expected = compiled(values)
    pieces, hits = in_pieces(values, cuts)
    assert hits == expected
    assert pieces.state() == whole.state()


def test_one_value_per_call_gives_the_same_detections() -> None:
    values = steps(3, [1500, 1500], [0.0, 3.0], 0.5)
    _, expected = compiled(values)
    _, hits = in_pieces(values, list(range(1, len(values))))
    assert hits == expected and expected


@CASES
@given(seed=st.integers(0, 2**32 - 1), at=st.integers(0, 9000))
def test_a_checkpoint_mid_stream_continues_bit_for_bit(seed: int, at: int) -> None:
    values = steps(seed, [3000, 3000, 3000], [0.0, 1.0, -1.0], 1.0)
    whole, expected = compiled(values)
    first = DriftWatch("adwin")
    hits = first.update(values[:at])
    second = DriftWatch("adwin")
    second.restore(through_checkpoint(first.state()))
    hits += [at + i for i in second.update(values[at:])]
    assert hits == expected
    assert second.state() == whole.state()


def test_a_checkpoint_just_after_a_detection_still_restarts_the_window() -> None:
    """River resets on the update after a detection: the pending reset is saved too."""
    values = steps(11, [3000, 3000], [0.0, 2.0], 1.0)
    _, expected = compiled(values)
    at = expected[0] + 1
    first = DriftWatch("adwin")
    first.update(values[:at])
    assert first.state()["adwin"]["detected"]
    second = DriftWatch("adwin")
    second.restore(through_checkpoint(first.state()))
    assert [at + i for i in second.update(values[at:])] == expected[1:]
    assert second.state()["adwin"]["window"][0] == len(values) - at  # restarted at `at`


def test_the_state_is_plain_python() -> None:
    watch, _ = compiled(steps(1, [5000], [0.0], 1.0))
    state = watch.state()

    def plain(value: object) -> bool:
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, list):
            return all(plain(v) for v in value)
        return value is None or type(value) in (bool, int, float, str)

    assert plain(state)
    assert len(state["adwin"]["totals"]) > 1


def legacy_states() -> list[dict[str, Any]]:
    """What the two older formats saved: a pickled per-event River ADWIN; chunk means."""
    river: Any = drift.ADWIN()  # type: ignore[no-untyped-call]
    for value in steps(5, [500], [1.0], 0.5).tolist():
        river.update(value)
    chunked: Any = drift.ADWIN(clock=1)  # type: ignore[no-untyped-call]
    for value in (0.3, 0.4, 0.2):
        chunked.update(value)
    ph = [0.0, 0.0, 0.0, 0.0, float("inf"), -1.0, 0.0]
    return [
        {"kind": "adwin", "detector": pickle.dumps(river)},
        {
            "kind": "adwin",
            "detector": pickle.dumps(chunked),
            "pending": [3.5, 7.0],
            "page_hinkley": ph,
        },
        {"kind": "adwin", "detector": None, "pending": [0.0, 0.0], "page_hinkley": ph},
    ]


@pytest.mark.parametrize("index", range(3))
def test_older_checkpoints_restore_and_detection_restarts(index: int) -> None:
    state = through_checkpoint(legacy_states()[index])
    values = steps(9, [2500, 2500], [0.0, 2.0], 1.0)
    watch = DriftWatch("adwin")
    watch.update(values[:100])  # whatever came before, the restored detector starts afresh
    watch.restore(state)
    fresh, expected = compiled(values)
    assert watch.update(values) == expected
    assert watch.state() == fresh.state()


def test_a_state_of_another_kind_leaves_the_detector_fresh() -> None:
    ph = DriftWatch("page_hinkley")
    ph.update(steps(2, [300], [0.0], 1.0))
    watch = DriftWatch("adwin")
    watch.restore(through_checkpoint(ph.state()))
    assert watch.state() == DriftWatch("adwin").state()


def broken(change: str) -> dict[str, Any]:
    watch, _ = compiled(steps(4, [4000], [0.0], 1.0))
    state = watch.state()
    adwin = state["adwin"]
    if change == "bucket past the row":
        adwin["totals"][0] += [1.0] * ADWIN_MAX_BUCKETS
        adwin["variances"][0] += [0.0] * ADWIN_MAX_BUCKETS
    elif change == "rows past the arrays":
        adwin["totals"] = [[1.0]] * ADWIN_ROWS
        adwin["variances"] = [[0.0]] * ADWIN_ROWS
    elif change == "no rows":
        adwin["totals"], adwin["variances"] = [], []
    elif change == "rows disagree":
        adwin["variances"] = adwin["variances"][:-1]
    elif change == "width":
        adwin["window"][0] += 1.0
    elif change == "tick":
        adwin["tick"] = 32
    elif change == "text":
        adwin["totals"][0][0] = "x"
    elif change == "missing":
        del adwin["window"]
    return state


@pytest.mark.parametrize(
    "change",
    [
        "bucket past the row",
        "rows past the arrays",
        "no rows",
        "rows disagree",
        "width",
        "tick",
        "text",
        "missing",
    ],
)
def test_a_malformed_state_is_refused_with_a_clear_error(change: str) -> None:
    watch = DriftWatch("adwin")
    with pytest.raises(IntegrityError, match="ADWIN state"):
        watch.restore(broken(change))
    assert watch.update(np.zeros(100)) == []  # still usable


def test_cost_per_event_against_river() -> None:
    """Printed, not asserted (no speed thresholds): the figure for the report."""
    values = np.random.default_rng(0).exponential(0.5, 1_000_000)
    values[500_000:] *= 2.0
    compiled(values[:1000])  # compile outside the timing
    start = time.perf_counter()
    _, hits = compiled(values)
    ours = time.perf_counter() - start
    start = time.perf_counter()
    expected, _ = river_run(values)
    theirs = time.perf_counter() - start
    assert hits == expected and hits
    per_event = 1e9 / len(values)
    print(f"\nADWIN ns/event: compiled {ours * per_event:.1f}, River {theirs * per_event:.1f}")
