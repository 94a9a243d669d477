from __future__ import annotations

from bench.catalog import BENCHMARKS
from bench.core import BenchContext, Figure
from shared.settings import KafkaSettings


def test_ratio_is_better_than_baseline_whatever_the_direction() -> None:
    assert Figure("t", 200, "events/s", "b", 100).ratio == 2.0
    assert Figure("p99", 5, "ms", "b", 10, higher_is_better=False).ratio == 2.0


def test_json_carries_the_baseline_measured_in_the_same_run() -> None:
    data = Figure("t", 300, "events/s", "plain", 100).as_json()
    assert data | {"ratio": 3.0} == data
    assert {"name", "value", "unit", "baseline", "baseline_value", "ratio"} <= data.keys()


def test_context_scales_counts_but_never_to_zero() -> None:
    ctx = BenchContext(KafkaSettings(), scale=0.0001)
    assert ctx.count(1000) == 1
    assert "kafka" in BENCHMARKS
