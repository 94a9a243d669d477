"""Kafka records of `Sample` protobufs -> a learner Batch, at the edge of the trainer.

Positional records (`dense` vectors) are read by the compiled wire decoder. Named records
(a `features` map, on a stream with a feature schema) are flagged by it and go through the
stream's `Featurizer`, the one the SDK, ingestion, inference and replay use: dense slots
with NaN for a missing value, and hashed ids (0 = missing) in `Batch.sparse`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from confluent_kafka import Message
from google.protobuf.message import DecodeError
from prometheus_client import Counter

from services.trainer import wire
from services.trainer.config import TrainerConfig
from services.trainer.learner import Batch
from services.trainer.settings import reconcile
from shared import samples
from shared.errors import ConfigError, InvalidArgument
from shared.features import FeatureProblem, FeatureSpace, Featurizer
from shared.kafka.consumer import where
from streamlearn.v1 import sample_pb2, stream_pb2

log = logging.getLogger(__name__)

REFUSED = Counter(
    "streamlearn_trainer_features_refused_total",
    "Named records that could not be featurized (learned as nothing, their offsets advance)",
    ["kind"],
)
# Kinds of refusal besides FeatureProblem's: named features on a stream without a pinned
# schema, and named features beside positional ones (ingestion refuses both).
NO_SCHEMA, MIXED = "no_feature_schema", "mixed_features"

# Called when named records arrive while no schema is pinned: the featurizer to use, if any.
Resolve = Callable[[], Featurizer | None]
Definition = stream_pb2.StreamDefinition


def decode(
    messages: Sequence[Message],
    task: str,
    features: int,
    featurizer: Featurizer | None = None,
    *,
    resolve: Resolve | None = None,
    outputs: int = 1,
) -> tuple[Batch, int]:
    """Decode records in order; returns the batch and how many records were unusable.

    Rows are read by the compiled wire decoder; the rare row it cannot read, and every row
    with named features, goes through the protobuf library. Unusable records (undecodable,
    wrong number of features, features the featurizer refuses, no label) become rows of NaN
    with a NaN label (class -1), so the learner's guard skips and counts them while their
    offsets advance with the rest (ingestion normally keeps such records out of this topic).
    A `SampleBatch` record (the high-rate path) contributes all its rows, in place.

    With a `featurizer` (the stream's pinned schema) the batch is `named`: NaN features are
    missing values, and `sparse` holds each row's hashed ids (zeros for positional rows).
    Without one, named records are unusable; `resolve` is asked for a featurizer first.

    `Batch.served` holds the rows' `served_score` (the joiner's samples) when some row has
    `outputs` of them (the model's output width), NaN for the other rows.

    Raises:
        ConfigError: the featurizer's dense width is not `features`.

    """
    n = len(messages)
    values = [m.value() or b"" for m in messages]
    lengths = np.fromiter((len(v) for v in values), dtype=np.int64, count=n)
    ends = np.cumsum(lengths)
    buf = np.frombuffer(b"".join(values), dtype=np.uint8)
    x = np.full((n, features), np.nan, dtype=np.float32)
    y = np.full(n, np.nan, dtype=np.float64)
    w = np.ones(n, dtype=np.float32)
    status = np.zeros(n, dtype=np.int8)
    named = np.zeros(n, dtype=np.uint8)
    served = np.full((n, outputs), np.nan, dtype=np.float32)
    wire.decode_rows(buf, ends - lengths, ends, x, y, w, status, named, served)
    if featurizer is None and resolve is not None and named.any():
        featurizer = resolve()
    if featurizer is not None and featurizer.dense_dim != features:
        raise ConfigError(
            f"the stream's schema has {featurizer.dense_dim} numeric features, the model {features}"
        )
    slots = featurizer.space.sparse_slots if featurizer is not None else 0
    ids = np.zeros((n, slots), dtype=np.int64)
    batches: dict[int, samples.Columns] = {}
    for i in map(int, np.flatnonzero((status == wire.MALFORMED) | (named != 0))):
        if samples.is_batch(samples.headers_of(messages[i])):
            batches[i], status[i] = _columns(values[i], messages[i], features)
        else:
            row = _Row(x, y, w, ids, served, i)
            status[i] = _decode_slowly(values[i], messages[i], row, featurizer)
    bad = np.flatnonzero(status != wire.OK)
    x[bad], y[bad], ids[bad], served[bad] = np.nan, np.nan, 0, np.nan
    if batches:
        x, y, w, ids, served = _expand(x, y, w, ids, served, batches)
    batch = Batch(
        torch.from_numpy(x),
        _labels(y, task),
        torch.from_numpy(w),
        torch.from_numpy(ids) if slots else None,
        named=featurizer is not None,
        served=torch.from_numpy(served) if np.isfinite(served).any() else None,
    )
    return batch, len(bad)


def decode_for(
    config: TrainerConfig,
    messages: Sequence[Message],
    featurizer: Featurizer | None = None,
    *,
    resolve: Resolve | None = None,
) -> tuple[Batch, int]:
    """`decode` for a learner of `config`: its task, features and output width."""
    features = config.model.features
    outputs = config.outputs
    return decode(messages, config.task, features, featurizer, resolve=resolve, outputs=outputs)


def _columns(value: bytes, msg: Message, features: int) -> tuple[samples.Columns, int]:
    """The rows of a `SampleBatch` record; an unusable one becomes one row of NaN."""
    try:
        columns = samples.decode_batch(sample_pb2.SampleBatch.FromString(value))
    except (DecodeError, InvalidArgument):
        log.warning("undecodable sample batch", extra={"position": where(msg)})
        return _NO_ROWS, wire.MALFORMED
    if columns.dense.shape[1] != features:
        return _NO_ROWS, wire.WRONG_SHAPE
    return columns, wire.OK


_NO_ROWS = samples.Columns("", [], [], np.empty(0), np.empty((0, 0)), np.empty(0), np.empty(0))


def _expand(
    x: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    ids: np.ndarray,
    served: np.ndarray,
    batches: dict[int, samples.Columns],
) -> tuple[np.ndarray, ...]:
    """Replace the row of each batch record by the batch's rows, keeping record order.

    Batch records are positional: their rows have no hashed ids (all 0, i.e. missing) and
    no served prediction (NaN).
    """
    arrays = (x, y, w, ids, served)
    parts: list[list[np.ndarray]] = [[] for _ in arrays]
    start = 0
    for i in sorted(batches):
        columns = batches[i]
        rows = len(columns)
        filled: tuple[np.ndarray, ...] = (
            columns.dense.astype(np.float32),
            columns.labels.astype(np.float64),
            columns.weights.astype(np.float32),
            np.zeros((rows, ids.shape[1]), dtype=np.int64),
            np.full((rows, served.shape[1]), np.nan, dtype=np.float32),
        )
        for part, array, rows_of_batch in zip(parts, arrays, filled, strict=True):
            # an unusable batch record keeps its NaN row, so it is counted
            part += [array[start:i], rows_of_batch if rows else array[i : i + 1]]
        start = i + 1
    return tuple(
        np.concatenate([*part, array[start:]]) for part, array in zip(parts, arrays, strict=True)
    )


class _Row:
    """Where the slow path writes one record: its row of each output array."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        w: np.ndarray,
        ids: np.ndarray,
        served: np.ndarray,
        index: int,
    ) -> None:
        self.x, self.y, self.w, self.ids, self.index = x, y, w, ids, index
        self.served = served

    def label(self, sample: sample_pb2.Sample) -> None:
        """The label (NaN when there is none the trainer learns), weight and served score."""
        label = sample.WhichOneof("label")
        self.y[self.index] = (
            getattr(sample, label) if label in ("regression", "class_index") else np.nan
        )
        self.w[self.index] = sample.weight or 1.0
        served = sample.served_score
        self.served[self.index] = served if len(served) == self.served.shape[1] else np.nan


def _decode_slowly(value: bytes, msg: Message, row: _Row, featurizer: Featurizer | None) -> int:
    try:
        sample = sample_pb2.Sample.FromString(value)
    except DecodeError:
        log.warning("undecodable sample", extra={"position": where(msg)})
        return wire.MALFORMED
    if sample.features:
        return _featurize(sample, msg, row, featurizer)
    if len(sample.dense) != row.x.shape[1]:
        return wire.WRONG_SHAPE
    row.x[row.index] = sample.dense
    row.label(sample)
    return wire.OK


def _featurize(
    sample: sample_pb2.Sample, msg: Message, row: _Row, featurizer: Featurizer | None
) -> int:
    """A named record through the stream's featurizer; WRONG_SHAPE when it does not fit."""
    if featurizer is None:
        return _refuse(NO_SCHEMA, msg, logging.DEBUG)  # the loop says why, once
    if len(sample.dense) or len(sample.sparse.indices):
        return _refuse(MIXED, msg)
    try:
        dense, ids = featurizer.sample(sample)
    except FeatureProblem as exc:
        return _refuse(exc.kind, msg)
    row.x[row.index], row.ids[row.index] = dense, ids
    row.label(sample)
    return wire.OK


def _refuse(kind: str, msg: Message, level: int = logging.WARNING) -> int:
    # The kind and the position only: the values (the problem's message) stay out of logs.
    REFUSED.labels(kind).inc()
    log.log(level, "named features refused", extra={"kind": kind, "position": where(msg)})
    return wire.WRONG_SHAPE


def _labels(y: np.ndarray, task: str) -> torch.Tensor:
    if task == "multiclass":
        # No class (no label, or not a whole number in int32 range): class -1, which the
        # learner's guard refuses and counts, as it refuses NaN labels of the other tasks.
        with np.errstate(invalid="ignore"):
            whole = np.isfinite(y) & (y >= 0) & (y < 2**31) & (y == np.floor(y))
        return torch.from_numpy(np.where(whole, y, -1).astype(np.int64))
    return torch.from_numpy(y.astype(np.float32))


class PinnedStream:
    """The definition of the stream a trainer learns, pinned from start-up until it stops.

    Its schema's `Featurizer` decodes named records, and every version's lineage names it,
    so inference featurizes with the revision the weights were learned with. A later
    revision is not taken up while running (the model's inputs may no longer fit it): it is
    logged once, and a restart pins it (reconciling the config, or refusing a contradiction).

    The definition is read again only when needed: once for named records arriving while
    nothing is pinned, and at most every `notice_every_s` to notice a change.

    A stream not defined at start-up is learned positionally. When named records arrive
    while nothing is pinned, the definition is looked up once more (the stream may have been
    created since): a schema the model fits is pinned from then on; one it does not fit
    stops the trainer (ConfigError, before the records are learned, so a restart that fits
    the model to the schema learns them); no schema at all leaves the named records
    unusable (counted, logged once) until a restart.
    """

    def __init__(
        self,
        stream: str,
        config: TrainerConfig,
        definition: Definition | None = None,
        lookup: Callable[[], Definition | None] | None = None,
        notice_every_s: float = 300.0,
    ) -> None:
        """`definition`: as found at start-up; `lookup`: reads the stream's current one."""
        self.stream = stream
        self.definition: Definition | None = None
        self.featurizer: Featurizer | None = None
        self._config = config
        self._lookup = lookup
        self._looked_up = False  # the one lookup of a stream not defined at start-up
        self._unusable_logged = False
        self._change_logged = False
        self._notice_every_s = notice_every_s
        self._noticed_at = time.monotonic()
        if definition is not None:
            self._pin(definition)

    def resolve(self) -> Featurizer | None:
        """The featurizer for named records (`decode`'s `resolve`); see the class docstring.

        Raises:
            ConfigError: the definition found late has a schema the model does not fit.

        """
        if self.featurizer is None and self.definition is None and not self._looked_up:
            self._looked_up = True
            found = self._lookup() if self._lookup is not None else None
            if found is not None and FeatureSpace.from_definition(found) is not None:
                if reconcile(self._config, found) != self._config:
                    raise ConfigError(
                        f"stream {self.stream!r} got a feature schema (revision "
                        f"{found.revision}) the model does not fit: restart the trainer"
                    )
                self._pin(found)
            elif found is not None:
                self.definition = found  # positional after all: lineage names it
        if self.featurizer is None and not self._unusable_logged:
            self._unusable_logged = True
            log.error(
                "named samples of a stream without a pinned feature schema: each is "
                "skipped and counted until a restart",
                extra={"stream": self.stream},
            )
        return self.featurizer

    def notice(self) -> None:
        """Log once that the stream's definition changed since it was pinned (kept as is).

        Reads the definition at most every `notice_every_s` (a lookup reads the catalog).
        """
        if self._change_logged or self._lookup is None or self.definition is None:
            return
        if time.monotonic() - self._noticed_at < self._notice_every_s:
            return
        self._noticed_at = time.monotonic()
        current = self._lookup()
        if current is not None and current.revision > self.definition.revision:
            self._change_logged = True
            log.warning(
                "stream definition changed: the pinned one is kept until a restart",
                extra={
                    "stream": self.stream,
                    "pinned_revision": self.definition.revision,
                    "revision": current.revision,
                },
            )

    def _pin(self, definition: Definition) -> None:
        self.definition = definition
        space = FeatureSpace.from_definition(definition)
        self.featurizer = Featurizer(space) if space is not None else None
        log.info(
            "stream definition pinned",
            extra={
                "stream": self.stream,
                "revision": definition.revision,
                "schema": space.to_json() if space is not None else None,
            },
        )
