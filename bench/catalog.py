"""Benchmarks by name: `streamlearn bench NAME` runs `bench/NAME.py`."""

from __future__ import annotations

from collections.abc import Callable

from bench import freshness, inference, ingestion, kafka, registry, replay, trainer
from bench.core import BenchContext, Figure

BENCHMARKS: dict[str, Callable[[BenchContext], list[Figure]]] = {
    "kafka": kafka.run,
    "ingestion": ingestion.run,
    "registry": registry.run,
    "inference": inference.run,
    "trainer": trainer.run,
    "replay": replay.run,
    "freshness": freshness.run,
}
