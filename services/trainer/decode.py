"""Kafka records of `Sample` protobufs -> a learner Batch, at the edge of the trainer."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from confluent_kafka import Message
from google.protobuf.message import DecodeError

from services.trainer.learner import Batch
from shared.kafka.consumer import where
from streamlearn.v1 import sample_pb2

log = logging.getLogger(__name__)


def decode(messages: Sequence[Message], task: str, features: int) -> tuple[Batch, int]:
    """Decode records in order; returns the batch and how many records were undecodable.

    Undecodable or misshapen records become rows of NaN, so the learner's guard skips and
    counts them while their offsets still advance with the rest (ingestion normally keeps
    such records out of the training topic).
    """
    n = len(messages)
    x = np.full((n, features), np.nan, dtype=np.float32)
    y = np.full(n, np.nan, dtype=np.float32)
    w = np.ones(n, dtype=np.float32)
    bad = 0
    for i, msg in enumerate(messages):
        try:
            sample = sample_pb2.Sample.FromString(msg.value() or b"")
        except DecodeError:
            bad += 1
            log.warning("undecodable sample", extra={"position": where(msg)})
            continue
        if len(sample.dense) != features:
            bad += 1
            continue
        x[i] = sample.dense
        y[i] = sample.regression if task == "regression" else sample.class_index
        w[i] = sample.weight or 1.0
    labels = torch.from_numpy(y)
    if task == "multiclass":  # NaN rows get label 0 and are skipped through their features
        labels = torch.from_numpy(np.nan_to_num(y, nan=0).astype(np.int64))
    return Batch(torch.from_numpy(x), labels, torch.from_numpy(w)), bad
