"""How `bench freshness` and the demo turn observations into figures (no services)."""

from __future__ import annotations

import numpy as np
from rich.console import Console

from bench.freshness import latencies
from bench.timeline import Timeline
from streamlearn.client.datasets import Synthetic
from streamlearn.system.summary import DemoResult, sparkline, summary
from streamlearn.system.watch import Served, rate_between
from streamlearn.v1 import metrics_pb2


def test_each_record_is_served_by_the_first_version_covering_its_offset() -> None:
    timeline = Timeline(
        produced={"a": 100.0, "b": 100.5, "c": 101.0},
        trained_on={"a": (100.1, 0, 4), "b": (100.6, 1, 0), "c": (101.2, 0, 9)},
        versions={"m": {1: (100.3, {0: 5}), 2: (100.9, {0: 8, 1: 1}), 3: (101.5, {0: 10})}},
        served={"m": {1: 100.4, 3: 101.6}},  # v2 was never served: v3 superseded it
    )
    hops = latencies(timeline, "m")
    np.testing.assert_allclose(hops["end to end"], [0.4, 1.1, 0.6])
    np.testing.assert_allclose(hops["ingestion"], [0.1, 0.1, 0.2])
    np.testing.assert_allclose(hops["trainer+registry"], [0.2, 0.3, 0.3])
    np.testing.assert_allclose(hops["inference"], [0.1, 0.7, 0.1])


def test_records_not_yet_served_are_left_out() -> None:
    timeline = Timeline(
        produced={"a": 1.0, "b": 2.0},
        trained_on={"a": (1.1, 0, 0)},
        versions={"m": {1: (1.2, {0: 1})}},
        served={"m": {}},
    )
    assert len(latencies(timeline, "m")["end to end"]) == 0


def test_holdout_labels_follow_the_concept_in_force() -> None:
    drift = Synthetic("drift", features=4, drift_every=100, seed=2)
    x, before = drift.holdout(500, at=10)
    x_again, after = drift.holdout(500, at=150)
    np.testing.assert_array_equal(x, x_again)
    np.testing.assert_array_equal(after, 1 - before)  # the concept flipped
    # The noise-free labels agree with the noisy stream's majority.
    features, labels = next(drift.chunks(20_000, 20_000))
    weights = np.random.default_rng(2).normal(size=(4, 3))[:, 0]
    bayes = ((features[:100] @ weights) > 0).astype(np.int32)
    assert (bayes == labels[:100]).mean() > 0.7


def test_the_demo_summary_reports_the_drop_and_the_recovery() -> None:
    history = [
        Served(t, v, a) for t, v, a in [(1, 1, 0.6), (5, 3, 0.97), (10, 4, 0.1), (12, 6, 0.95)]
    ]
    result = DemoResult(
        duration_s=20,
        drift_after_s=9,
        elapsed_s=20,
        delivered=40_000,
        latest_version=8,
        history=history,
    )
    console = Console(record=True, width=120)
    console.print(summary(result))
    text = console.export_text()
    assert "best accuracy 0.970" in text
    assert "fell to 0.100" in text
    assert "to 0.950 in 3.0s (v6)" in text
    assert sparkline([0.0, 0.5, 1.0]) == "▁▅█"


def test_the_dashboard_rate_comes_from_two_metrics_messages() -> None:
    first = metrics_pb2.TrainerMetrics(events_applied=1_000)
    first.time.FromNanoseconds(10 * 10**9)
    second = metrics_pb2.TrainerMetrics(events_applied=4_000)
    second.time.FromNanoseconds(11_500_000_000)
    assert rate_between(first, second) == 2_000
    assert rate_between(metrics_pb2.TrainerMetrics(), first) is None  # no earlier message
    assert rate_between(second, second) is None
