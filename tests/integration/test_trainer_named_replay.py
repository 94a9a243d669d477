"""Named features end to end on the real broker: the trainer pins the stream's schema, and a
replay of its slice reproduces its weights (scaler statistics included) bit for bit; killed
mid-stream, it still ends with the parameters of an uninterrupted run."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from confluent_kafka import Producer

from services.replay import replay
from services.replay.runs import Run
from services.replay.slices import SliceSpec, resolve
from services.trainer import checkpoint
from services.trainer.config import ModelSpec, OptimizerSpec, TrainerConfig
from services.trainer.decode import PinnedStream, decode
from services.trainer.export import OnnxExporter
from services.trainer.learner import Learner
from services.trainer.progress import Positions
from services.trainer.settings import reconcile
from services.trainer.versions import VersionPublisher
from shared.clients.registry import RegistryClient
from shared.fakes import FakeMessage
from shared.features import FeatureSpace, Featurizer, put_values
from shared.kafka.config import producer_config
from shared.kafka.producer import delivering
from shared.settings import KafkaSettings
from shared.streams import publish_definition
from streamlearn.v1 import metrics_pb2, sample_pb2, stream_pb2
from tests.helpers import plain, read_all, read_to_end, version_numbers, wait_until
from tests.integration.conftest import Running
from tests.integration.test_trainer_crash import progress, run_with_kills, running, trainer_env

STREAM = "named"
NUMERIC = ["x0", "x1", "x2"]
CITIES = ["oslo", "rome", "lima", "pune", "kyiv"]
DEVICES = ["ios", "android", "web"]
DEFINITION = stream_pb2.StreamDefinition(
    name=STREAM,
    dense_dim=len(NUMERIC),
    sparse_buckets=256,  # small: torch updates every bucket's weights per step
    label_kind=stream_pb2.LABEL_KIND_BINARY,
    features=stream_pb2.FeatureSchema(
        numeric=NUMERIC,
        categorical=["city", "device"],
        crosses=[stream_pb2.FeatureCross(left="city", right="device")],
    ),
)
# What a user writes: no feature count, no hash space (the trainer takes both from the schema).
# Page-Hinkley: it sees this short flip (Adam recovers within a few hundred events, too
# soon for ADWIN on means of 32 losses); the drift state and tag must replay alike either way.
LOGISTIC = TrainerConfig(
    model=ModelSpec(kind="logistic"),
    optimizer=OptimizerSpec(name="adam", lr=0.02),
    drift="page_hinkley",
)
MLP = TrainerConfig(
    model=ModelSpec(kind="mlp", hidden=(8,), embedding_dim=4),
    optimizer=OptimizerSpec(name="adam", lr=0.01, schedule="inv_sqrt"),
)
BAD_EVERY = 997  # every so often a record ingestion would have refused: an unusable row


def named_sample(i: int, rng: np.random.Generator, flip: bool) -> sample_pb2.Sample:
    """Numeric features on very different scales (the scaler's job), some values missing."""
    x = rng.normal(size=3) * np.array([1.0, 50.0, 0.01]) + np.array([0.0, 200.0, 0.0])
    city, device = CITIES[int(rng.integers(5))], DEVICES[int(rng.integers(3))]
    z = x[0] - (x[1] - 200) / 50 + 100 * x[2] + (1.5 if city in ("oslo", "pune") else -1.0)
    z = -z if flip else z  # the concept flips halfway: a drift to detect
    values: dict[str, Any] = {"x0": x[0], "x1": x[1], "x2": x[2], "city": city, "device": device}
    for name in list(values):
        if rng.random() < 0.08:
            del values[name]
    if i % BAD_EVERY == BAD_EVERY - 1:
        values["colour"] = "red"  # a field the schema does not name
    sample = sample_pb2.Sample(
        event_id=f"e{i}",
        key=f"k{i % 7}",
        stream=STREAM,
        class_index=int(rng.random() < 1 / (1 + np.exp(-z))),
    )
    put_values(sample, values)
    return sample


def produce_named(kafka: KafkaSettings, topic: str, n: int, partitions: int = 1) -> None:
    rng = np.random.default_rng(11)
    producer = Producer(producer_config(kafka))
    with delivering(producer) as report:
        for i in range(n):
            sample = named_sample(i, rng, flip=i >= n // 2)
            producer.produce(
                topic,
                sample.SerializeToString(),
                sample.key.encode(),
                partition=i % partitions,
                on_delivery=report,
            )
            producer.poll(0)
    assert report.delivered == n


def named_env(
    kafka: KafkaSettings, topic: str, streams: str, tmp_path: Path, registry: str
) -> dict[str, str]:
    env = trainer_env(kafka, topic, tmp_path, registry)
    env["TRAINER_TOPICS__STREAMS"] = streams
    env["TRAINER_STREAM"] = STREAM
    return env


def assert_same_network(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> None:
    assert list(ours) == list(theirs)
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), name


def test_replaying_a_named_stream_reproduces_the_trainer_bit_for_bit(
    kafka: KafkaSettings,
    make_topic: Callable[..., str],
    tmp_path: Path,
    registry_service: Running,
) -> None:
    total = 4_000
    topic, streams = make_topic(1), make_topic(1, "streams")
    stored = publish_definition(kafka, streams, DEFINITION)
    produce_named(kafka, topic, total)
    env = named_env(kafka, topic, streams, tmp_path, registry_service.address)
    env["TRAINER_CONFIG"] = LOGISTIC.model_dump_json(exclude_unset=True)
    path, log = tmp_path / "trainer" / "demo.ckpt", tmp_path / "trainer.log"
    with running(env, log) as trainer:
        wait_until(lambda: progress(path) >= total or trainer.poll() is not None, 300)
        trainer.terminate()
        assert trainer.wait(60) == 0, log.read_text()[-3000:]
    saved = checkpoint.load(path)
    assert saved is not None
    lived: dict[str, Any] = saved["learner"]

    definition = replay.stream_definition(kafka, streams, STREAM)
    assert definition == stored
    piece = resolve(kafka, SliceSpec(topic))
    run = Run("replayed", LOGISTIC, streams=frozenset({STREAM}), definition=definition)
    replay.backtest(kafka, piece, [run])

    assert (run.config.model.features, run.config.model.sparse_buckets) == (3, 256)
    assert saved["config_hash"] == run.config.hash()  # the trainer reconciled it the same way
    state = run.learner.state()
    assert (state["applied"], state["skipped"]) == (lived["applied"], lived["skipped"])
    assert state["skipped"] == total // BAD_EVERY  # the refused records, on both sides
    assert any("mean" in name for name in state["network"])  # the scaler is compared too
    assert_same_network(state["network"], lived["network"])
    assert plain(state["metrics"]) == plain(lived["metrics"])
    for counter in ("drifts", "last_drift_event", "diverging", "new_categories"):
        assert state[counter] == lived[counter], counter
    assert lived["drifts"] >= 1 and lived["new_categories"] > 0

    with RegistryClient(registry_service.address) as registry:
        versions = [registry.get_version("demo", n) for n in version_numbers(registry, "demo")]
    tagged = [v for v in versions if "drift" in v.tags]
    assert tagged and all(v.tags["drift"].startswith("detected at event ") for v in tagged)
    metrics_topic = read_to_end(kafka, f"{topic}.metrics")
    published = [metrics_pb2.TrainerMetrics.FromString(m.value()) for m in metrics_topic]
    assert published and published[-1].metrics["drifts"] == lived["drifts"]
    assert {"last_drift_event", "diverging", "new_categories"} <= set(published[-1].metrics)


def test_a_versions_lineage_names_its_stream_definition_through_the_registry(
    registry_client: RegistryClient,
) -> None:
    config = reconcile(LOGISTIC, DEFINITION)
    pinned = PinnedStream(STREAM, config, DEFINITION)
    assert pinned.featurizer is not None
    learner = Learner(config, "cpu")
    rng = np.random.default_rng(2)
    records = [
        FakeMessage("t", 0, i, b"k", named_sample(i, rng, False).SerializeToString())
        for i in range(50)
    ]
    batch, _ = decode(records, config.task, 3, pinned.featurizer)  # type: ignore[arg-type]
    learner.learn(batch)
    registry_client.create_model("lineage", exist_ok=True)
    publisher = VersionPublisher(registry_client, "lineage", STREAM, "t-0", learner, pinned)
    publisher.exporter = OnnxExporter(learner, batch.finite_rows(16))
    version = publisher.publish(Positions({"t:0": 50}, {"t:0": 0}))
    assert version is not None
    stored = registry_client.get_version("lineage", version).lineage
    assert stored.stream == STREAM
    assert stored.stream_definition == DEFINITION  # inference featurizes with exactly this


def test_killed_mid_named_stream_ends_with_the_parameters_of_an_uninterrupted_run(
    kafka: KafkaSettings,
    make_topic: Callable[..., str],
    tmp_path: Path,
    registry_service: Running,
) -> None:
    total = 3_000
    topic, streams = make_topic(1), make_topic(1, "streams")
    publish_definition(kafka, streams, DEFINITION)
    produce_named(kafka, topic, total)
    env = named_env(kafka, topic, streams, tmp_path, registry_service.address)
    env["TRAINER_CONFIG"] = MLP.model_dump_json(exclude_unset=True)
    kills = sorted(random.Random(8).sample(range(600, total - 600), 2))
    path = tmp_path / "trainer" / "demo.ckpt"
    saved = run_with_kills(env, path, total, kills, tmp_path / "trainer.log")

    config = reconcile(MLP, DEFINITION)
    space = FeatureSpace.from_definition(DEFINITION)
    assert space is not None
    reference = Learner(config)
    batch, bad = decode(read_all(kafka, topic, total), config.task, 3, Featurizer(space))
    assert bad == total // BAD_EVERY and batch.named and batch.sparse is not None
    reference.learn(batch)
    resumed = Learner(config)
    resumed.restore(saved["learner"])  # type: ignore[arg-type]
    assert (resumed.applied + resumed.skipped) == total
    assert_same_network(resumed.network.state_dict(), reference.network.state_dict())
    assert saved["positions"]["next"] == {f"{topic}:0": total}  # type: ignore[index]
