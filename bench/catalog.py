"""Benchmarks by name: `streamlearn bench NAME` runs `bench/NAME.py`.

A benchmark's module is imported when it runs, not when the catalog is read: `bench cli`
measures start-up and must not pay for torch itself.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping

from bench.core import BenchContext, Figure
from shared.errors import StreamlearnError

Runner = Callable[[BenchContext], list[Figure]]

NAMES = (
    "kafka",
    "ingestion",
    "dedup",
    "join",
    "registry",
    "inference",
    "trainer",
    "lm",
    "replay",
    "freshness",
    "sustain",
    "cli",
    "quality",
)
# Benchmarks that need no Kafka (`cli` measures start-up, `quality` learns in-process,
# `dedup` fills ingestion's memory in-process): `streamlearn bench` starts no broker for them.
WITHOUT_KAFKA = frozenset({"cli", "quality", "dedup"})


class _Catalog(Mapping[str, Runner]):
    """`run` of `bench/NAME.py` for each name, imported on first access."""

    def __getitem__(self, name: str) -> Runner:
        """Import `bench/NAME.py` and return its `run`.

        Raises:
            KeyError: No benchmark has that name.
            StreamlearnError: Its module cannot be imported (a dependency is missing).

        """
        if name not in NAMES:
            raise KeyError(name)
        try:
            module = importlib.import_module(f"bench.{name}")
        except ImportError as exc:
            raise StreamlearnError(
                f"benchmark {name!r} cannot run: {exc} (install the dev dependencies: `make setup`)"
            ) from exc
        runner: Runner = module.run
        return runner

    def __contains__(self, name: object) -> bool:
        """By name only: Mapping's default would import the module (torch, for some)."""
        return name in NAMES

    def __iter__(self) -> Iterator[str]:
        return iter(NAMES)

    def __len__(self) -> int:
        return len(NAMES)


BENCHMARKS: Mapping[str, Runner] = _Catalog()
