"""Named features -> model inputs: the one featurizer of the SDK, services and replay.

A stream's `FeatureSchema` names its numeric features (dense slots, in order) and its
categorical features and crosses (one hashed sparse slot each). A record of named values
becomes:

- `dense`: float32, one slot per numeric feature; a missing value is NaN, which the model's
  input layer imputes with the feature's running mean (so it adds nothing to the score);
- `ids`: int64, one slot per categorical feature and per cross, each the bucket of
  `name=value` (or `left=value^right=value`) in [1, buckets); 0 means "missing" and is the
  embedding's padding row, so a missing category adds nothing either.

The hashing trick (as Vowpal Wabbit does) needs no vocabulary: a category never seen before
has a bucket like any other, whose weights start at zero; it is never an error. The hash is
BLAKE2b (64 bits) of the UTF-8 text, so every process and every language can reproduce it.
Categories are canonical text: strings as they are, booleans `true`/`false`, whole numbers
without a fraction (`7`, `7.0` and `"7"` are one category), other numbers by `repr`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from shared.errors import InvalidArgument
from streamlearn.v1 import sample_pb2, stream_pb2

Value = float | int | str | bool | None
MAX_NAME_CHARS = 100
MAX_CATEGORY_BYTES = 1024
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_NUMBERS = (bool, int, float, np.bool_, np.integer, np.floating)


class FeatureProblem(InvalidArgument):
    """A record that does not fit its feature space; `kind` says how (for dead-letter reasons).

    Kinds: `unknown_feature` (a field the schema does not name), `wrong_type` (text for a
    numeric feature, or a value that is neither number nor text), `non_finite` (NaN,
    infinity, or beyond float32), `oversized` (a category over MAX_CATEGORY_BYTES).
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class FeatureSpace:
    """The named features of one stream revision: what `Featurizer` needs, and no more."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...] = ()
    crosses: tuple[tuple[str, str], ...] = ()
    buckets: int = 0
    revision: int = 0

    @classmethod
    def from_definition(cls, definition: stream_pb2.StreamDefinition) -> FeatureSpace | None:
        """The space a definition declares, or None for a positional-only stream."""
        schema = definition.features
        if not schema.numeric and not schema.categorical:
            return None
        return cls(
            numeric=tuple(schema.numeric),
            categorical=tuple(schema.categorical),
            crosses=tuple((c.left, c.right) for c in schema.crosses),
            buckets=int(definition.sparse_buckets),
            revision=int(definition.revision),
        )

    @property
    def sparse_slots(self) -> int:
        """Hashed ids per row: one per categorical feature and one per cross."""
        return len(self.categorical) + len(self.crosses)

    @property
    def names(self) -> frozenset[str]:
        """Every field a record may carry."""
        return frozenset(self.numeric) | frozenset(self.categorical)

    def problems(self) -> list[str]:
        """What makes this space unusable (empty when it is fine)."""
        found = []
        everything = [*self.numeric, *self.categorical]
        for name in everything:
            if not name or len(name) > MAX_NAME_CHARS or not name.isprintable():
                found.append(f"feature name {name!r} must be 1-{MAX_NAME_CHARS} printable chars")
        duplicated = sorted({n for n in everything if everything.count(n) > 1})
        if duplicated:
            found.append(f"features named twice: {', '.join(duplicated)}")
        for left, right in self.crosses:
            if left not in self.categorical or right not in self.categorical or left == right:
                found.append(f"cross {left}x{right} must join two different categorical features")
        if self.sparse_slots and self.buckets < 2:
            found.append("categorical features need sparse_buckets >= 2")
        return found

    def to_json(self) -> str:
        """A stable text form (e.g. for logs and reports)."""
        return json.dumps(
            {
                "numeric": self.numeric,
                "categorical": self.categorical,
                "crosses": self.crosses,
                "buckets": self.buckets,
                "revision": self.revision,
            },
            sort_keys=True,
        )


def bucket(text: str, buckets: int) -> int:
    """The bucket of one hashed feature text, in [1, buckets) (0 is reserved for missing)."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return 1 + int.from_bytes(digest, "little") % (buckets - 1)


def category_text(value: float | int | str | bool) -> str:
    """The canonical text of a category (see the module docstring)."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    number = float(value)
    if not math.isfinite(number):
        raise FeatureProblem("non_finite", f"category {number} is not finite")
    if number.is_integer():
        return str(int(number))
    return repr(number)


@dataclass
class Tally:
    """Running counts of what featurizing met: missing values per field, rows."""

    rows: int = 0
    missing: dict[str, int] = field(default_factory=dict)

    def count_missing(self, name: str) -> None:
        """One more record without `name`."""
        self.missing[name] = self.missing.get(name, 0) + 1


class Featurizer:
    """Named values -> (dense, ids) under one `FeatureSpace`; strict about unknown fields."""

    def __init__(self, space: FeatureSpace) -> None:
        problems = space.problems()
        if problems:
            raise InvalidArgument("; ".join(problems))
        self.space = space
        self.tally = Tally()
        self._slot = {name: i for i, name in enumerate(space.numeric)}
        self._cat = {name: i for i, name in enumerate(space.categorical)}
        self._cross = [
            (len(space.categorical) + i, left, right)
            for i, (left, right) in enumerate(space.crosses)
        ]

    @property
    def dense_dim(self) -> int:
        """Dense slots per row."""
        return len(self.space.numeric)

    def row(self, values: Mapping[str, Value]) -> tuple[np.ndarray, np.ndarray]:
        """One record -> (dense float32 (F,), ids int64 (K,)).

        Raises:
            InvalidArgument: an unknown field, a text for a numeric feature, a number that
                is not finite, a category too long.

        """
        dense = np.full(self.dense_dim, np.nan, dtype=np.float32)
        ids = np.zeros(self.space.sparse_slots, dtype=np.int64)
        self.fill(values, dense, ids)
        return dense, ids

    def rows(self, records: Iterable[Mapping[str, Value]]) -> tuple[np.ndarray, np.ndarray]:
        """Many records -> (dense (N, F), ids (N, K)); raises as `row` on the first bad one."""
        listed = list(records)
        dense = np.full((len(listed), self.dense_dim), np.nan, dtype=np.float32)
        ids = np.zeros((len(listed), self.space.sparse_slots), dtype=np.int64)
        for i, values in enumerate(listed):
            try:
                self.fill(values, dense[i], ids[i])
            except FeatureProblem as exc:
                raise FeatureProblem(exc.kind, f"record {i}: {exc}") from exc
        return dense, ids

    def check(self, values: Mapping[str, Value]) -> FeatureProblem | None:
        """The first problem of a record, or None; hashes nothing, counts nothing (validation)."""
        try:
            for name, value in values.items():
                if value is None:
                    continue
                if name in self._slot:
                    numeric_value(name, value)
                elif name in self._cat:
                    _category_checked(name, value)
                else:
                    raise FeatureProblem("unknown_feature", f"unknown feature {name!r}")
        except FeatureProblem as exc:
            return exc
        return None

    def fill(self, values: Mapping[str, Value], dense: np.ndarray, ids: np.ndarray) -> None:
        """Write one record into preallocated rows (dense filled with NaN, ids with 0)."""
        self._write(values, dense, ids)
        self._count(values)

    def _write(self, values: Mapping[str, Value], dense: np.ndarray, ids: np.ndarray) -> None:
        texts: dict[str, str] = {}
        for name, value in values.items():
            if value is None:
                continue
            if name in self._slot:
                dense[self._slot[name]] = numeric_value(name, value)
            elif name in self._cat:
                text = _category_checked(name, value)
                texts[name] = text
                ids[self._cat[name]] = bucket(f"{name}={text}", self.space.buckets)
            else:
                raise FeatureProblem("unknown_feature", f"unknown feature {name!r}")
        for slot, left, right in self._cross:
            if left in texts and right in texts:
                ids[slot] = bucket(
                    f"{left}={texts[left]}^{right}={texts[right]}", self.space.buckets
                )

    def _count(self, values: Mapping[str, Value]) -> None:
        self.tally.rows += 1
        if len(values) == len(self._slot) + len(self._cat) and None not in values.values():
            return
        for name in self.space.numeric + self.space.categorical:
            if values.get(name) is None:
                self.tally.count_missing(name)

    def sample(self, sample: sample_pb2.Sample) -> tuple[np.ndarray, np.ndarray]:
        """The named features of a `Sample` -> (dense, ids); raises as `row`."""
        return self.row(sample_values(sample))


def _category_checked(name: str, value: Value) -> str:
    """The canonical text of a categorical value, or the problem with it."""
    if not isinstance(value, (*_NUMBERS, str)):
        raise FeatureProblem("wrong_type", f"feature {name!r} is not text or a number")
    text = category_text(value)
    if len(text) * 4 > MAX_CATEGORY_BYTES and (
        len(text.encode("utf-8", "surrogatepass")) > MAX_CATEGORY_BYTES
    ):  # at most 4 bytes per character: most texts need no encoding to be measured
        raise FeatureProblem(
            "oversized", f"category of {name!r} is over {MAX_CATEGORY_BYTES} bytes"
        )
    return text


def numeric_value(name: str, value: Value) -> float:
    """A numeric feature's value as a float; text or non-finite numbers are refused."""
    if not isinstance(value, _NUMBERS):
        raise FeatureProblem("wrong_type", f"feature {name!r} is numeric, got {str(value)[:40]!r}")
    try:
        number = float(value)
    except OverflowError:  # an integer past any float
        number = math.inf
    if not math.isfinite(number) or abs(number) > _FLOAT32_MAX:
        raise FeatureProblem("non_finite", f"feature {name!r} is {number}, not a finite float32")
    return number


def sample_values(sample: sample_pb2.Sample) -> dict[str, Value]:
    """The named features of a `Sample` as plain Python values."""
    found: dict[str, Value] = {}
    for name, value in sample.features.items():
        kind = value.WhichOneof("kind")
        found[name] = None if kind is None else getattr(value, kind)
    return found


def put_values(sample: sample_pb2.Sample, values: Mapping[str, Value]) -> None:
    """Write named values into `sample.features`, each in the oneof member of its type.

    Booleans travel as `flag`, integers as `integer` (exact, so an id or a nanosecond time
    keeps every digit), other numbers as `number`, text as `category`; None is left out
    (missing). The featurizer then reads them exactly as it reads the same Python values.
    """
    for name, value in values.items():
        if value is None:
            continue
        if not isinstance(name, str):
            raise InvalidArgument(f"feature names are text, got {name!r}")
        slot = sample.features[name]
        if isinstance(value, str):
            slot.category = value
        elif isinstance(value, (bool, np.bool_)):
            slot.flag = bool(value)
        elif isinstance(value, (int, np.integer)):
            if not -(2**63) <= int(value) < 2**63:
                raise InvalidArgument(f"feature {name!r}: {value} is outside int64")
            slot.integer = int(value)
        elif isinstance(value, (float, np.floating)):
            slot.number = float(value)
        else:
            kind = type(value).__name__
            raise InvalidArgument(f"feature {name!r}: {kind} is not a number or text")
