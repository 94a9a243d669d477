"""Synthetic streams for demos, tests and benchmarks, and readers of CSV/JSONL sample files.

Each synthetic dataset has a stream definition and yields (features, labels) in chunks from
a seeded generator, so two runs with the same seed produce the same stream.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shared.errors import InvalidArgument
from streamlearn.v1 import stream_pb2

KIND = stream_pb2.LabelKind
NAMES = ("regression", "binary", "multiclass", "drift")


@dataclass(frozen=True)
class Synthetic:
    """A seeded synthetic stream of one of the `NAMES` kinds.

    `regression` is linear with noise, `binary` logistic, `multiclass` softmax, and `drift`
    logistic whose true weights flip sign every `drift_every` events (concept drift).
    """

    name: str
    features: int = 8
    classes: int = 3
    drift_every: int = 50_000
    seed: int = 0

    def definition(self, stream: str = "") -> stream_pb2.StreamDefinition:
        """The stream definition its samples satisfy."""
        kind = {
            "regression": KIND.LABEL_KIND_REGRESSION,
            "multiclass": KIND.LABEL_KIND_MULTICLASS,
        }.get(self.name, KIND.LABEL_KIND_BINARY)
        return stream_pb2.StreamDefinition(
            name=stream or self.name,
            dense_dim=self.features,
            label_kind=kind,
            num_classes=self.classes if kind == KIND.LABEL_KIND_MULTICLASS else 0,
            description=f"synthetic {self.name} stream ({self.features} features)",
        )

    def chunks(self, events: int, chunk: int = 1000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(features float32 [n, d], labels) chunks adding up to `events` rows."""
        if self.name not in NAMES:
            raise InvalidArgument(f"unknown dataset {self.name!r}; choose from {', '.join(NAMES)}")
        rng = np.random.default_rng(self.seed)
        weights = self._weights(rng)
        for start in range(0, events, chunk):
            x = rng.normal(size=(min(chunk, events - start), self.features)).astype(np.float32)
            yield x, self._labels(rng, x, weights, start)

    def holdout(self, n: int, at: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Fresh features and their noise-free labels under the concept in force at event `at`.

        Scoring a model on these shows how well it knows the current concept (for `drift`,
        its accuracy collapses when the concept flips and recovers as it relearns).
        """
        weights = self._weights(np.random.default_rng(self.seed))  # the stream's own
        x = np.random.default_rng(seed).normal(size=(n, self.features)).astype(np.float32)
        if self.name == "multiclass":
            return x, np.argmax(x @ weights, axis=1).astype(np.int32)
        margin = self._margin(x, weights, np.full(n, at))
        if self.name == "regression":
            return x, margin.astype(np.float64)
        return x, (margin > 0).astype(np.int32)

    def _weights(self, rng: np.random.Generator) -> np.ndarray:
        """The true weights: the first draw of the stream's generator."""
        weights: np.ndarray = rng.normal(size=(self.features, self.classes))
        return weights

    def _margin(self, x: np.ndarray, w: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """The true margin of each row at its stream position (sign flipped in odd `drift` eras)."""
        margin: np.ndarray = x @ w[:, 0]
        if self.name == "drift":
            margin = np.where((positions // self.drift_every) % 2 == 1, -margin, margin)
        return margin

    def _labels(
        self, rng: np.random.Generator, x: np.ndarray, w: np.ndarray, start: int
    ) -> np.ndarray:
        if self.name == "regression":
            targets: np.ndarray = x @ w[:, 0] + 0.1 * rng.normal(size=len(x))
            return targets.astype(np.float64)
        if self.name == "multiclass":
            noisy: np.ndarray = x @ w + rng.gumbel(size=(len(x), self.classes))
            classes: np.ndarray = np.argmax(noisy, axis=1)
            return classes.astype(np.int32)
        margin = self._margin(x, w, start + np.arange(len(x)))
        positive: np.ndarray = rng.random(len(x)) < 1 / (1 + np.exp(-margin))
        return positive.astype(np.int32)


def read_file(
    path: Path, label_column: str = "label", key_column: str = ""
) -> Iterator[dict[str, Any]]:
    """Sample dicts (see `to_sample`) from a JSONL file, or a CSV file with a header row.

    In a CSV file every column other than the label, key and `event_id` is a feature.
    """
    if path.suffix in (".jsonl", ".ndjson"):
        with path.open() as lines:
            for number, line in enumerate(lines, 1):
                if line.strip():
                    yield _json_line(line, path, number)
        return
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            yield _csv_row(row, label_column, key_column)


def _json_line(line: str, path: Path, number: int) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"{path}:{number}: not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise InvalidArgument(f"{path}:{number}: expected an object")
    return value


def _csv_row(row: dict[str, str], label_column: str, key_column: str) -> dict[str, Any]:
    if label_column not in row:
        raise InvalidArgument(f"no {label_column!r} column (use --label-column)")
    label_text = row.pop(label_column)
    key = row.pop(key_column, "") if key_column else ""
    event_id = row.pop("event_id", "")
    number = float(label_text)
    label: float | int = int(number) if number.is_integer() and "." not in label_text else number
    return {
        "features": [float(v) for v in row.values()],
        "label": label,
        "key": key,
        "event_id": event_id,
    }
