"""Synthetic streams for demos, tests and benchmarks, and readers of CSV/JSONL sample files.

Each synthetic dataset has a stream definition and yields (features, labels) in chunks from
a seeded generator, so two runs with the same seed produce the same stream.

`CsvMapping` maps the columns of a CSV file with a header to a defined stream: by name to
its feature schema (named streams), or in order to its dense vector (positional streams),
with the label parsed by the stream's label kind.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shared.errors import InvalidArgument
from shared.features import FeatureSpace, Featurizer, Value
from streamlearn.v1 import stream_pb2

KIND = stream_pb2.LabelKind
NAMES = ("regression", "binary", "multiclass", "drift")
JSON_LINES = (".jsonl", ".ndjson")


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
    if path.suffix in JSON_LINES:
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


@dataclass(frozen=True)
class CsvColumns:
    """Which CSV columns are not features; `event_id` empty: the `event_id` column if any."""

    label: str = "label"
    key: str = ""
    event_id: str = ""
    ignore_extra: bool = False  # skip columns a named stream's schema does not name


@dataclass(frozen=True)
class CsvRow:
    """One data row of a CSV file: a sample dict (see `to_sample`), or why it is none."""

    line: int
    fields: dict[str, Any] | None
    error: str = ""


class CsvMapping:
    """The columns of one CSV header mapped to a stream definition.

    Named streams: each feature column is a feature of the schema, by name (numbers parsed
    as floats, categories kept as text, an empty cell missing); a column the schema does
    not name is an error unless `ignore_extra`; a feature with no column is missing in
    every row. Positional streams: the feature columns, in order, are the dense vector.
    Labels: a class index or one of the stream's class names (binary, multiclass; several
    joined by `;` for multilabel), a number for regression.
    """

    def __init__(
        self,
        definition: stream_pb2.StreamDefinition,
        header: Sequence[str],
        columns: CsvColumns = CsvColumns(),
    ) -> None:
        """Check `header` against the definition.

        Raises:
            InvalidArgument: a missing label (key, event id) column, a repeated column name,
                columns a named schema lacks, or a positional stream of another width.

        """
        self.definition = definition
        self.header = list(header)
        self.space = FeatureSpace.from_definition(definition)
        self._featurizer = None if self.space is None else Featurizer(self.space)
        repeated = sorted({c for c in self.header if self.header.count(c) > 1})
        if repeated:
            raise InvalidArgument(f"columns named twice in the header: {', '.join(repeated)}")
        if definition.label_kind == KIND.LABEL_KIND_UNSPECIFIED:
            raise InvalidArgument(f"stream {definition.name!r} has no label kind")
        event_id = columns.event_id or ("event_id" if "event_id" in self.header else "")
        self._label = self._index(columns.label, "--label")
        self._key = self._index(columns.key, "--key") if columns.key else None
        self._event_id = self._index(event_id, "--event-id") if event_id else None
        reserved = {columns.label, columns.key, event_id}
        self.features = [(i, c) for i, c in enumerate(self.header) if c not in reserved]
        self.missing: list[str] = []  # schema features without a column
        if self.space is None:
            if len(self.features) != definition.dense_dim:
                raise InvalidArgument(
                    f"{len(self.features)} feature columns, stream {definition.name!r} has "
                    f"{definition.dense_dim} positional features"
                )
            return
        unknown = [c for _, c in self.features if c not in self.space.names]
        if unknown and not columns.ignore_extra:
            raise InvalidArgument(
                f"columns not in stream {definition.name!r}'s schema: {', '.join(unknown)} "
                f"(it has {', '.join(self.space.numeric + self.space.categorical)}; "
                "--ignore-extra skips them)"
            )
        self.features = [(i, c) for i, c in self.features if c in self.space.names]
        given = {c for _, c in self.features}
        self.missing = [n for n in self.space.numeric + self.space.categorical if n not in given]
        self._numeric = frozenset(self.space.numeric)

    def _index(self, column: str, option: str) -> int:
        if column not in self.header:
            raise InvalidArgument(f"no column {column!r} in the header (see {option})")
        return self.header.index(column)

    def row(self, cells: Sequence[str], line: int = 0) -> CsvRow:
        """The sample dict of one row, or the row's error (with its line)."""
        try:
            return CsvRow(line, self._fields(cells))
        except InvalidArgument as exc:
            return CsvRow(line, None, f"line {line}: {exc}")

    def _fields(self, cells: Sequence[str]) -> dict[str, Any]:
        if len(cells) != len(self.header):
            raise InvalidArgument(f"{len(cells)} cells, the header has {len(self.header)}")
        fields: dict[str, Any] = {"features": self._features(cells)}
        fields.update(self._label_of(cells[self._label].strip()))
        if self._key is not None:
            fields["key"] = cells[self._key]
        if self._event_id is not None:
            fields["event_id"] = cells[self._event_id]
        return fields

    def _features(self, cells: Sequence[str]) -> dict[str, Value] | list[float]:
        if self._featurizer is None:
            dense = [_number(c, cells[i]) for i, c in self.features]
            if None in dense:
                raise InvalidArgument("an empty feature cell (positional streams need all)")
            return [float(v) for v in dense if v is not None]
        values: dict[str, Value] = {}
        for i, column in self.features:
            cell = cells[i]
            if column in self._numeric:
                values[column] = _number(column, cell)
            elif cell.strip():  # the cell's text, trimmed: " FR" and "FR" are one category
                values[column] = cell.strip()
        problem = self._featurizer.check(values)
        if problem is not None:
            raise problem
        return values

    def _label_of(self, text: str) -> dict[str, Any]:
        kind = self.definition.label_kind
        if not text:
            raise InvalidArgument("the label is empty")
        if kind == KIND.LABEL_KIND_REGRESSION:
            target = _number("label", text)
            return {"label": target}
        if kind == KIND.LABEL_KIND_MULTILABEL:
            return {"labels": [self._class(part.strip()) for part in text.split(";") if part]}
        return {"label": self._class(text)}

    def _class(self, text: str) -> int:
        names = list(self.definition.class_names)
        classes = 2 if self.definition.label_kind == KIND.LABEL_KIND_BINARY else len(names)
        classes = max(classes, self.definition.num_classes)
        if text in names:
            return names.index(text)
        try:
            number = float(text)  # "1.0" too: columns with gaps are often written as floats
        except ValueError:
            number = math.nan
        if not number.is_integer():
            shown = f" or one of {', '.join(names)}" if names else ""
            raise InvalidArgument(f"label {text[:40]!r} is not a class index{shown}")
        index = int(number)
        if not 0 <= index < classes:
            raise InvalidArgument(f"class {index} outside [0, {classes})")
        return index


def _number(column: str, cell: str) -> float | None:
    """A numeric cell as a finite float; None when empty (missing)."""
    text = cell.strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        raise InvalidArgument(f"column {column!r}: {text[:40]!r} is not a number") from None
    if not math.isfinite(number):
        raise InvalidArgument(f"column {column!r}: {text[:40]!r} is not finite")
    return number


def csv_header(path: Path) -> list[str]:
    """The header row of a CSV file (UTF-8, a byte-order mark ignored).

    Raises:
        InvalidArgument: the file is empty or unreadable as UTF-8 CSV.

    """
    with _csv_errors(path), path.open(newline="", encoding="utf-8-sig") as handle:
        header = next(csv.reader(handle), None)
    if not header:
        raise InvalidArgument(f"{path}: no header row")
    return header


def csv_rows(path: Path, mapping: CsvMapping) -> Iterator[CsvRow]:
    """Each data row of a CSV file mapped by `mapping` (blank lines skipped).

    Raises:
        InvalidArgument: the file is not UTF-8 or not CSV (e.g. a field over the csv
            module's limit), naming the line: callers check the whole file with
            `check_csv` before sending anything, so no row is sent twice by a rerun.

    """
    with _csv_errors(path), path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        for cells in reader:
            if cells:
                yield mapping.row(cells, reader.line_num)


def check_csv(path: Path, mapping: CsvMapping) -> int:
    """Read the whole file once (rows that do not fit are fine here); returns its rows.

    Raises:
        InvalidArgument: as `csv_rows`, before anything is sent.

    """
    return sum(1 for _ in csv_rows(path, mapping))


@contextlib.contextmanager
def _csv_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"{path}: not UTF-8 text (byte {exc.start} of a line)") from None
    except csv.Error as exc:
        raise InvalidArgument(f"{path}: not readable as CSV: {exc}") from None
