"""Small helpers shared by the test suites."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
from confluent_kafka import Consumer, Message, TopicPartition
from onnx import TensorProto, helper, numpy_helper

from shared.clients.registry import RegistryClient
from shared.errors import NotFound
from shared.kafka.config import consumer_config
from shared.kafka.consumer import high_watermarks, read_until
from shared.settings import KafkaSettings


def read_all(
    kafka: KafkaSettings, topic: str, expected: int, timeout: float = 30.0, **overrides: Any
) -> list[Message]:
    """Read `topic` from the beginning in a fresh group until `expected` records or timeout.

    Waits a little past `expected` so that a duplicate would be seen, not missed.
    """
    consumer = Consumer(consumer_config(kafka, f"reader-{uuid.uuid4().hex[:8]}", **overrides))
    consumer.subscribe([topic])
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            out += [m for m in consumer.consume(500, 0.2) if m.error() is None]
            if len(out) >= expected:
                out += [m for m in consumer.consume(500, 0.5) if m.error() is None]
                break
    finally:
        consumer.close()
    return out


def wait_until(condition: Callable[[], object], timeout: float = 30.0, pause: float = 0.05) -> None:
    """Poll `condition` until it is true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"condition not reached within {timeout:.0f}s"
        time.sleep(pause)


def read_to_end(kafka: KafkaSettings, topic: str, timeout: float = 30.0) -> list[Message]:
    """Every record of `topic` up to its current end, partition by partition (no group)."""
    consumer = Consumer(consumer_config(kafka, f"reader-{uuid.uuid4().hex[:8]}"))
    try:
        ends = {(topic, p): end for p, end in high_watermarks(consumer, topic, timeout).items()}
        consumer.assign([TopicPartition(t, p, 0) for (t, p), end in ends.items() if end > 0])
        wanted = {tp: end for tp, end in ends.items() if end > 0}
        return [m for batch in read_until(consumer, wanted) for m in batch]
    finally:
        consumer.close()


def record_count(kafka: KafkaSettings, topic: str) -> int:
    """Records written to `topic` so far (sum of its partitions' end offsets)."""
    consumer = Consumer(consumer_config(kafka, f"reader-{uuid.uuid4().hex[:8]}"))
    try:
        return sum(high_watermarks(consumer, topic).values())
    finally:
        consumer.close()


def logloss(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean binary log-loss of probabilities `scores` (any shape) against 0/1 `labels`."""
    p = np.clip(scores.ravel(), 1e-7, 1 - 1e-7)
    return float(-(labels * np.log(p) + (1 - labels) * np.log(1 - p)).mean())


def version_numbers(registry: RegistryClient, model: str) -> list[int]:
    """The registered versions of `model`, newest first; [] before the model exists."""
    try:
        return [v.version for v in registry.list_versions(model).versions]
    except NotFound:  # the trainer has not created its model yet
        return []


def lookup_model() -> bytes:
    """ONNX `score = table[idx]`: an index out of the table fails inside ONNX Runtime, past
    every check of the request."""
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "idx"], ["score"], axis=0)],
        "lookup",
        [helper.make_tensor_value_info("idx", TensorProto.INT64, ["batch", 1])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
        initializer=[numpy_helper.from_array(np.array([1, 2, 3], np.float32), "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def plain(state: object) -> object:
    """A saved state with its tensors as lists, so two states compare with `==`."""
    import torch

    if isinstance(state, dict):
        return {k: plain(v) for k, v in state.items()}
    if isinstance(state, list | tuple):
        return [plain(v) for v in state]
    if isinstance(state, torch.Tensor):
        return state.tolist()
    return state
