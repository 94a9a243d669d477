"""Benchmarks by name. Later issues add theirs (ingestion, trainer, registry, inference, ...)."""

from __future__ import annotations

from collections.abc import Callable

from bench import kafka
from bench.core import BenchContext, Figure

BENCHMARKS: dict[str, Callable[[BenchContext], list[Figure]]] = {
    "kafka": kafka.run,
}
