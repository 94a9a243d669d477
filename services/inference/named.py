"""Named inputs: per-field columns or JSON records -> a version's numeric inputs.

A version trained on a stream with a feature schema (`Lineage.stream_definition`) serves its
numeric inputs as always (`features` (N, F) float32 and, with categorical features,
`sparse` (N, K) int64) and, besides them, the stream's named fields, featurized here with
the one featurizer of streamlearn (`shared.features`) under exactly the definition the
version was trained on. A request sends either:

- one column per field it knows, each N values (missing fields are omitted; NaN in a float
  column is a missing value in that row); numbers for a numeric field (a text value must
  parse as one), numbers, booleans or text for a categorical one; or
- one `records` column of N JSON objects, field name -> value (null or absent: missing).

Field names that coincide with a model input or with `records` can only be sent as records.
Transport-free: columns arrive as numpy arrays (numbers) or lists of bytes (KServe BYTES).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.errors import InvalidArgument
from shared.features import FeatureSpace, Featurizer, Value
from shared.onnx_models import INPUT
from streamlearn.v1 import stream_pb2

log = logging.getLogger(__name__)

RECORDS = "records"
# The trainer's name for the hashed-id input (services.trainer.export.SPARSE_INPUT; not
# imported from there, which would load torch into the server).
SPARSE = "sparse"
# Datatypes a numbers column may have; BYTES columns hold text.
NUMBER_TYPES = ("FP32", "FP64", "INT32", "INT64", "BOOL")
TEXT_TYPE = "BYTES"

Column = np.ndarray | Sequence[bytes]


@dataclass(frozen=True)
class NamedTensor:
    """A named input as ModelMetadata lists it (V2 datatype, shape with -1 for the batch)."""

    name: str
    datatype: str
    shape: tuple[int, ...] = (-1, 1)


class NamedInputs:
    """The featurizer of one loaded version and the model inputs it feeds."""

    def __init__(self, featurizer: Featurizer, reserved: frozenset[str]) -> None:
        """Featurize into `features` and, when the space has sparse slots, `sparse`.

        Args:
            featurizer: Built from the version's stream definition.
            reserved: Names taken by the model's own inputs (not usable as field columns).

        """
        self.featurizer = featurizer
        self.space = featurizer.space
        self._numeric = frozenset(self.space.numeric)
        self._columns = frozenset(
            n for n in self.space.numeric + self.space.categorical if n not in reserved | {RECORDS}
        )

    @classmethod
    def for_version(
        cls,
        model: str,
        version: int,
        definition: stream_pb2.StreamDefinition | None,
        inputs: Mapping[str, tuple[str, tuple[int, ...]]],
    ) -> NamedInputs | None:
        """Named inputs for a version, or None (positional stream, or a graph that misfits).

        Args:
            model: For log lines.
            version: For log lines.
            definition: The stream definition the version was trained with, if any.
            inputs: The graph's inputs: name -> (V2 datatype, shape).

        """
        space = None if definition is None else FeatureSpace.from_definition(definition)
        if space is None:
            return None
        problem = _misfit(space, inputs)
        if problem:
            # The numeric inputs still serve; only the named ones would be wrong.
            log.warning(
                "named inputs disabled: the graph does not fit its stream definition",
                extra={"model": model, "model_version": version, "problem": problem},
            )
            return None
        return cls(Featurizer(space), frozenset(inputs))

    def knows(self, name: str) -> bool:
        """True for `records` and for every field that may be sent as a column."""
        return name == RECORDS or name in self._columns

    def unknown(self, name: str) -> InvalidArgument:
        """The error for a column this version does not know, naming what it takes."""
        return InvalidArgument(
            f"unknown input {name!r}: the model takes {INPUT!r}"
            + (f", {SPARSE!r}" if self.space.sparse_slots else "")
            + f", {RECORDS!r} or named fields {sorted(self._columns)}"
        )

    def tensors(self) -> list[NamedTensor]:
        """What a client may send beside the model's inputs, for ModelMetadata."""
        found = [
            NamedTensor(n, "FP32" if n in self._numeric else TEXT_TYPE)
            for n in self.space.numeric + self.space.categorical
            if n in self._columns
        ]
        return [*found, NamedTensor(RECORDS, TEXT_TYPE)]

    def rows(self, name: str, shape: Sequence[int], max_rows: int) -> int:
        """The rows of a column of `shape` ([N] or [N, 1]); refused beyond `max_rows`."""
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            raise InvalidArgument(f"input {name!r} has shape {list(shape)}; expected [N] or [N, 1]")
        if shape[0] < 0:
            raise InvalidArgument(f"input {name!r} has a negative dimension {list(shape)}")
        if shape[0] > max_rows:
            raise InvalidArgument(
                f"input {name!r} has {shape[0]} rows; at most {max_rows} per request"
            )
        return int(shape[0])

    def feeds(self, columns: Mapping[str, Column]) -> dict[str, np.ndarray]:
        """The model's numeric inputs for columns already checked by `knows` and `rows`.

        Raises:
            InvalidArgument: `records` with other columns, columns of different lengths, a
                value of the wrong type, unparsable JSON, an unknown field in a record.

        """
        if RECORDS in columns:
            if len(columns) > 1:
                others = sorted(n for n in columns if n != RECORDS)
                raise InvalidArgument(f"{RECORDS!r} comes alone; also sent: {others}")
            return self._featurize([_record(i, d) for i, d in enumerate(columns[RECORDS])])
        lengths = {name: len(column) for name, column in columns.items()}
        if len(set(lengths.values())) > 1:
            raise InvalidArgument(f"named inputs have different row counts: {lengths}")
        values = {name: self._values(name, column) for name, column in columns.items()}
        count = next(iter(lengths.values()), 0)
        return self._featurize([{n: v[i] for n, v in values.items()} for i in range(count)])

    def _featurize(self, records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
        try:
            dense, ids = self.featurizer.rows(records)  # FeatureProblem: an InvalidArgument
        except (OverflowError, ValueError) as exc:  # e.g. an integer beyond any float
            raise InvalidArgument(f"a value does not fit its feature: {exc}") from None
        feeds = {INPUT: dense}
        if self.space.sparse_slots:
            feeds[SPARSE] = ids
        return feeds

    def _values(self, name: str, column: Column) -> list[Value]:
        numeric = name in self._numeric
        if isinstance(column, np.ndarray):
            listed: list[Value] = column.reshape(-1).tolist()
            if column.dtype.kind == "f":  # NaN: missing in this row
                if not numeric and any(not math.isnan(v) and not v.is_integer() for v in listed):  # type: ignore[arg-type,union-attr]
                    # 0.1 as float32 would hash as "0.10000000149011612", a bucket the
                    # trainer never learned: categories travel as BYTES (or whole numbers).
                    # Infinity is no whole number either (int() of it would raise).
                    raise InvalidArgument(
                        f"input {name!r} is categorical: send BYTES, or whole numbers"
                    )
                return [None if math.isnan(v) else v for v in listed]  # type: ignore[arg-type]
            return listed
        return [_text_value(name, i, data, numeric) for i, data in enumerate(column)]


def _misfit(space: FeatureSpace, inputs: Mapping[str, tuple[str, tuple[int, ...]]]) -> str:
    """What keeps featurized rows from feeding this graph ("" when they fit)."""
    problems = space.problems()
    if problems:
        return "; ".join(problems)
    wanted = {INPUT: ("FP32", len(space.numeric))}
    if space.sparse_slots:
        wanted[SPARSE] = ("INT64", space.sparse_slots)
    if set(inputs) != set(wanted):
        return f"graph inputs {sorted(inputs)}, featurized inputs {sorted(wanted)}"
    for name, (datatype, width) in wanted.items():
        got_type, shape = inputs[name]
        if got_type != datatype or len(shape) != 2 or shape[1] not in (-1, width):
            return f"input {name!r} is {got_type} {list(shape)}; featurized {datatype} [N, {width}]"
    return ""


def _text_value(name: str, row: int, data: bytes, numeric: bool) -> Value:
    """A BYTES element: the text of a category, or a number for a numeric field."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument(f"input {name!r} row {row} is not UTF-8 text") from None
    if not numeric:
        return text
    try:
        number = float(text)
    except ValueError:
        raise InvalidArgument(
            f"input {name!r} row {row}: {text[:40]!r} is not a number (numeric feature)"
        ) from None
    return None if math.isnan(number) else number


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (send null for a missing value)")


def _record(row: int, data: bytes) -> dict[str, Any]:
    """One `records` element: a JSON object of field name -> value."""
    try:
        record = json.loads(data.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # RecursionError: deeply nested arrays exhaust the decoder's stack, not the server.
        raise InvalidArgument(f"{RECORDS}[{row}] is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(record, dict):
        raise InvalidArgument(
            f"{RECORDS}[{row}] is a JSON {type(record).__name__}, not an object of field values"
        )
    return record
