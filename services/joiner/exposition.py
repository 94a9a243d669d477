"""Prometheus metrics of the joiner: the core's counters per partition, and the adapter's own.

The core's counters live in each partition's state (they survive restarts and move with
their partition), so they are collected from the live joiners at scrape time rather than
counted twice into process-local counters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import Counter
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from services.joiner.metrics import DELAY_BUCKETS_S, JoinMetrics

DEAD_LETTERS = Counter(
    "streamlearn_joiner_dead_letters_total",
    "Records the joiner wrote to the dead letters (this process)",
    ["reason"],
)
SAMPLES = Counter(
    "streamlearn_joiner_samples_total", "Samples written to training (this process)", ["stream"]
)
TRANSACTIONS = Counter(
    "streamlearn_joiner_transactions_total", "Transactions committed (this process)"
)
CHANGELOG_ERRORS = Counter(
    "streamlearn_joiner_changelog_errors_total",
    "Changelog records left out of a restore because they are no state entry",
)
_OUTCOMES = ("joined", "negatives", "expired", "late", "unknown", "duplicates")
_MEMORY = ("overflow", "forgotten")


class JoinCollector(Collector):
    """The counters and label-delay histogram of every joiner this process holds."""

    def __init__(self, joiners: Callable[[], Mapping[int, JoinMetrics]]) -> None:
        """Collect from `joiners()`: partition -> its joiner's metrics, at each scrape."""
        self._joiners = joiners

    def collect(self) -> Iterator[Metric]:
        """The metric families (see `JoinMetrics`)."""
        outputs = CounterMetricFamily(
            "streamlearn_joiner_outputs",
            "Predictions and feedback by how they ended (joined, negatives, expired, late, "
            "unknown, duplicates), per partition, since the partition's state began",
            labels=["outcome", "partition"],
        )
        memory = CounterMetricFamily(
            "streamlearn_joiner_bounded",
            "Entries dropped to bound memory (overflow: max_pending, forgotten: max_closed)",
            labels=["kind", "partition"],
        )
        delay = HistogramMetricFamily(
            "streamlearn_joiner_label_delay_seconds",
            "Label event time - prediction time of joined samples",
            labels=["partition"],
        )
        for partition, metrics in sorted(dict(self._joiners()).items()):
            label = str(partition)
            for name in _OUTCOMES:
                outputs.add_metric([name, label], getattr(metrics, name))
            for name in _MEMORY:
                memory.add_metric([name, label], getattr(metrics, name))
            cumulative, buckets = 0, []
            for bound, count in zip(DELAY_BUCKETS_S, metrics.delay_buckets, strict=False):
                cumulative += count
                buckets.append((str(bound), float(cumulative)))
            buckets.append(("+Inf", float(sum(metrics.delay_buckets))))
            delay.add_metric([label], buckets, metrics.delay_sum_ms / 1000)
        yield outputs
        yield memory
        yield delay
