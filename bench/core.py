"""What a benchmark reports, and the context it runs in."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from shared.settings import KafkaSettings


@dataclass(frozen=True)
class Figure:
    """One measured figure next to its baseline, measured in the same run on the same data."""

    name: str
    value: float
    unit: str
    baseline: str
    baseline_value: float
    higher_is_better: bool = True

    @property
    def ratio(self) -> float:
        """How many times better than the baseline (>1 is better, whatever the unit)."""
        if self.higher_is_better:
            return self.value / self.baseline_value if self.baseline_value else float("inf")
        return self.baseline_value / self.value if self.value else float("inf")

    def as_json(self) -> dict[str, Any]:
        """The figure with its ratio, for `--json`."""
        return asdict(self) | {"ratio": round(self.ratio, 3)}


@dataclass(frozen=True)
class BenchContext:
    """What a benchmark may use: a Kafka cluster and a size knob."""

    kafka: KafkaSettings
    scale: float = 1.0

    def count(self, base: int) -> int:
        """`base` events scaled by the context (a quick run uses scale < 1)."""
        return max(1, int(base * self.scale))


def events_per_second(count: int, work: Callable[[], Any]) -> float:
    """Run `work` once and return `count` divided by its wall time."""
    started = time.perf_counter()
    work()
    return count / (time.perf_counter() - started)
