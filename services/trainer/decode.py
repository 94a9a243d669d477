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
from shared.kafka.consumer import where
from streamlearn.v1 import sample_pb2

log = logging.getLogger(__name__)


def decode(messages: Sequence[Message], task: str, features: int) -> tuple[Batch, int]:
    """Decode records in order; returns the batch and how many records were unusable.

    Rows are read by the compiled wire decoder; the rare row it cannot read goes through
    the protobuf library. Unusable records (undecodable, wrong number of features, no label)
    become rows of NaN, so the learner's guard skips and counts them while their offsets
    advance with the rest (ingestion normally keeps such records out of this topic).
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
    for i in map(int, np.flatnonzero(status == wire.MALFORMED)):
        status[i] = _decode_slowly(values[i], messages[i], task, x, y, w, i)
    bad = np.flatnonzero(status != wire.OK)
    x[bad] = np.nan
    return Batch(torch.from_numpy(x), _labels(y, task), torch.from_numpy(w)), len(bad)


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
    if task == "multiclass":  # unusable rows get class 0; their NaN features get them skipped
        return torch.from_numpy(np.nan_to_num(y, nan=0).astype(np.int64))
    return torch.from_numpy(y.astype(np.float32))
