"""Kafka records of `Sample` protobufs -> a learner Batch, at the edge of the trainer."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from confluent_kafka import Message
from google.protobuf.message import DecodeError

from services.trainer import wire
from services.trainer.learner import Batch
from shared import samples
from shared.errors import InvalidArgument
from shared.kafka.consumer import where
from streamlearn.v1 import sample_pb2

log = logging.getLogger(__name__)


def decode(messages: Sequence[Message], task: str, features: int) -> tuple[Batch, int]:
    """Decode records in order; returns the batch and how many records were unusable.

    Rows are read by the compiled wire decoder; the rare row it cannot read goes through
    the protobuf library. Unusable records (undecodable, wrong number of features, no label)
    become rows of NaN, so the learner's guard skips and counts them while their offsets
    advance with the rest (ingestion normally keeps such records out of this topic).
    A `SampleBatch` record (the high-rate path) contributes all its rows, in place.
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
    wire.decode_samples(buf, ends - lengths, ends, x, y, w, status)
    batches: dict[int, samples.Columns] = {}
    for i in map(int, np.flatnonzero(status == wire.MALFORMED)):
        if samples.is_batch(samples.headers_of(messages[i])):
            batches[i], status[i] = _columns(values[i], messages[i], features)
        else:
            status[i] = _decode_slowly(values[i], messages[i], task, x, y, w, i)
    bad = np.flatnonzero(status != wire.OK)
    x[bad] = np.nan
    if batches:
        x, y, w = _expand(x, y, w, batches)
    return Batch(torch.from_numpy(x), _labels(y, task), torch.from_numpy(w)), len(bad)


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
    x: np.ndarray, y: np.ndarray, w: np.ndarray, batches: dict[int, samples.Columns]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Replace the row of each batch record by the batch's rows, keeping record order."""
    xs, ys, ws, start = [], [], [], 0
    for i in sorted(batches):
        columns = batches[i]
        xs += [x[start:i], columns.dense.astype(np.float32)]
        ys += [y[start:i], columns.labels.astype(np.float64)]
        ws += [w[start:i], columns.weights.astype(np.float32)]
        if not len(columns):  # an unusable batch record: keep its NaN row, so it is counted
            xs[-1], ys[-1], ws[-1] = x[i : i + 1], y[i : i + 1], w[i : i + 1]
        start = i + 1
    xs, ys, ws = [*xs, x[start:]], [*ys, y[start:]], [*ws, w[start:]]
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ws)


def _decode_slowly(
    value: bytes, msg: Message, task: str, x: np.ndarray, y: np.ndarray, w: np.ndarray, row: int
) -> int:
    try:
        sample = sample_pb2.Sample.FromString(value)
    except DecodeError:
        log.warning("undecodable sample", extra={"position": where(msg)})
        return wire.MALFORMED
    if len(sample.dense) != x.shape[1]:
        return wire.WRONG_SHAPE
    x[row] = sample.dense
    label = sample.WhichOneof("label")
    y[row] = getattr(sample, label) if label in ("regression", "class_index") else np.nan
    w[row] = sample.weight or 1.0
    return wire.OK


def _labels(y: np.ndarray, task: str) -> torch.Tensor:
    if task == "multiclass":
        # No class (no label, or not a whole number in int32 range): class -1, which the
        # learner's guard refuses and counts, as it refuses NaN labels of the other tasks.
        with np.errstate(invalid="ignore"):
            whole = np.isfinite(y) & (y >= 0) & (y < 2**31) & (y == np.floor(y))
        return torch.from_numpy(np.where(whole, y, -1).astype(np.int64))
    return torch.from_numpy(y.astype(np.float32))
