"""The trainer loop with a pinned schema: learns named records, counts and publishes them."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from prometheus_client import REGISTRY

from services.trainer import checkpoint
from services.trainer.config import OptimizerSpec, TrainerConfig
from services.trainer.decode import PinnedStream, decode
from services.trainer.learner import Learner
from services.trainer.loop import TrainerLoop
from services.trainer.progress import Every
from services.trainer.settings import reconcile
from services.trainer.versions import VersionPublisher
from shared.errors import ConfigError, StreamlearnError
from shared.fakes import FakeMessage
from shared.features import put_values
from streamlearn.v1 import metrics_pb2, sample_pb2, stream_pb2
from tests.unit.test_trainer_hardening import TOPIC, ScriptedConsumer

DEFINITION = stream_pb2.StreamDefinition(
    name="demo",
    dense_dim=2,
    sparse_buckets=64,
    label_kind=stream_pb2.LABEL_KIND_BINARY,
    revision=1,
    features=stream_pb2.FeatureSchema(numeric=["a", "b"], categorical=["c"]),
)
CONFIG = reconcile(TrainerConfig(optimizer=OptimizerSpec(name="sgd", lr=0.1)), DEFINITION)


def named(i: int) -> bytes:
    sample = sample_pb2.Sample(event_id=f"e{i}", stream="demo", class_index=i % 2)
    values: dict[str, Any] = {"a": np.sin(i), "b": (i % 7) / 7, "c": f"k{i % 5}"}
    if i % 4 == 0:
        del values["b"]  # missing: imputed
    if i % 9 == 0:
        del values["c"]
    put_values(sample, values)
    return sample.SerializeToString()


@dataclass
class Registered:
    version: int


class FakeRegistry:
    def __init__(self) -> None:
        self.lineages: list[Any] = []

    def register(self, model: str, data: bytes, **kwargs: Any) -> Registered:
        self.lineages.append(kwargs["lineage"])
        return Registered(len(self.lineages))


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def produce(self, topic: str, value: bytes) -> None:
        self.sent.append(value)

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        return 0


def missing(field: str) -> float:
    value = REGISTRY.get_sample_value(
        "streamlearn_trainer_features_missing_total", {"field": field}
    )
    return value or 0.0


def test_a_trainer_with_a_pinned_schema_learns_named_records_and_reports_them(
    tmp_path: Path,
) -> None:
    values = [named(i) for i in range(60)]
    records = {0: [FakeMessage(TOPIC, 0, o, b"k", v) for o, v in enumerate(values)]}
    stop = threading.Event()
    learner = Learner(CONFIG, "cpu")
    pinned = PinnedStream("demo", CONFIG, DEFINITION)
    registry = FakeRegistry()
    publisher = VersionPublisher(registry, "demo", "demo", "t-0", learner, pinned)  # type: ignore[arg-type]
    producer = FakeProducer()
    before = {f: missing(f) for f in "abc"}
    loop = TrainerLoop(
        learner,
        ScriptedConsumer(records, stop),  # type: ignore[arg-type]
        TOPIC,
        tmp_path / "c.ckpt",
        publisher,
        producer,  # type: ignore[arg-type]
        "metrics",
        checkpoint_every=Every(10**9, 10**9),
        version_every=Every(25, 10**9),
        fetch=7,
        streams={"demo"},
        pinned=pinned,
    )
    loop.run(stop)

    assert (learner.applied, learner.skipped) == (60, 0)
    reference = Learner(CONFIG, "cpu")
    messages = [FakeMessage(TOPIC, 0, i, b"k", v) for i, v in enumerate(values)]
    featurizer = PinnedStream("demo", CONFIG, DEFINITION).featurizer
    batch, bad = decode(messages, CONFIG.task, 2, featurizer)  # type: ignore[arg-type]
    assert bad == 0 and batch.named
    reference.learn(batch)
    for ours, theirs in zip(
        learner.network.state_dict().values(), reference.network.state_dict().values(), strict=True
    ):
        assert torch.equal(ours, theirs)
    assert {f: missing(f) - before[f] for f in "abc"} == {"a": 0, "b": 15, "c": 7}
    assert registry.lineages and all(
        lineage.stream_definition == DEFINITION for lineage in registry.lineages
    )
    published = [metrics_pb2.TrainerMetrics.FromString(v) for v in producer.sent]
    assert published
    for key in ("drifts", "last_drift_event", "diverging", "new_categories"):
        assert key in published[-1].metrics
    assert published[-1].metrics["new_categories"] == learner.new_categories > 0
    saved = checkpoint.load(tmp_path / "c.ckpt")
    assert saved is not None and saved["drifts_tagged"] == publisher.drifts_tagged


def test_a_schema_the_model_does_not_fit_stops_the_trainer_without_a_checkpoint(
    tmp_path: Path,
) -> None:
    # Started before its stream was defined (positional, 32 features by default); the
    # schema found late does not fit: the trainer stops, and its restart (which fits the
    # model to the schema) must not find a checkpoint of the other config and refuse it.
    config = TrainerConfig()
    records = {0: [FakeMessage(TOPIC, 0, o, b"k", named(o)) for o in range(5)]}
    stop = threading.Event()
    learner = Learner(config, "cpu")
    pinned = PinnedStream("demo", config, None, lookup=lambda: DEFINITION)
    loop = TrainerLoop(
        learner,
        ScriptedConsumer(records, stop),  # type: ignore[arg-type]
        TOPIC,
        tmp_path / "c.ckpt",
        None,
        None,
        "metrics",
        checkpoint_every=Every(10**9, 10**9),
        version_every=Every(10**9, 10**9),
        fetch=5,
        streams={"demo"},
        pinned=pinned,
    )
    with pytest.raises(ConfigError, match="does not fit"):
        loop.run(stop)
    assert not (tmp_path / "c.ckpt").exists()
    assert learner.applied == 0


def test_a_checkpoint_of_another_feature_layout_is_refused(tmp_path: Path) -> None:
    # `stream create --replace` swapped two numeric fields: same config, other slots.
    swapped = stream_pb2.StreamDefinition()
    swapped.CopyFrom(DEFINITION)
    swapped.features.numeric[:] = ["b", "a"]
    swapped.revision = 2

    def loop_for(definition: stream_pb2.StreamDefinition) -> TrainerLoop:
        stop = threading.Event()
        stop.set()
        return TrainerLoop(
            Learner(CONFIG, "cpu"),
            ScriptedConsumer({0: []}, stop),  # type: ignore[arg-type]
            TOPIC,
            tmp_path / "c.ckpt",
            None,
            None,
            "metrics",
            checkpoint_every=Every(10**9, 10**9),
            version_every=Every(10**9, 10**9),
            fetch=5,
            streams={"demo"},
            pinned=PinnedStream("demo", CONFIG, definition),
        )

    loop_for(DEFINITION).save()
    renamed = stream_pb2.StreamDefinition()
    renamed.CopyFrom(DEFINITION)
    renamed.revision = 3  # a new revision with the same layout restores
    loop_for(renamed)
    with pytest.raises(StreamlearnError, match="another feature layout"):
        loop_for(swapped)
