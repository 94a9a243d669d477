"""A text stream through the trainer service: a byte language model learns each record's text.

The trainer picks the language model because the stream's definition says it carries text;
SIGKILLed at random points it ends with exactly the parameters of an uninterrupted run
(checkpoints hold weights, optimizer, metrics and offsets together), and its versions are
ONNX graphs with the `text` input, registered with the stream in lineage.
"""

from __future__ import annotations

import json
import random
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch
from confluent_kafka import Producer

from services.trainer import checkpoint
from services.trainer.config import DistillSpec
from services.trainer.text.config import TextModelConfig
from services.trainer.text.export import LOGPROBS_OUTPUT, TEXT_INPUT, TextOnnxExporter
from services.trainer.text.learner import TextLearner
from shared.clients.registry import RegistryClient
from shared.kafka.config import producer_config
from shared.kafka.producer import delivering
from shared.settings import KafkaSettings
from shared.streams import publish_definition
from streamlearn.v1 import sample_pb2, stream_pb2
from tests.helpers import wait_until
from tests.integration.conftest import Running
from tests.integration.test_trainer_crash import running, trainer_env

STREAM = "prose"
TINY = TextModelConfig(layers=1, width=32, heads=2, context=32, metrics_window=50)
WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "mat",
    "while",
    "rain",
    "fell",
    "softly",
    "over",
    "quiet",
    "hills",
    "and",
    "rivers",
]


def texts(n: int) -> list[bytes]:
    rng = random.Random(7)
    return [" ".join(rng.choices(WORDS, k=rng.randint(2, 12))).encode() for _ in range(n)]


def produce_texts(kafka: KafkaSettings, topic: str, corpus: list[bytes]) -> None:
    producer = Producer(producer_config(kafka))
    with delivering(producer) as report:
        for i, text in enumerate(corpus):
            sample = sample_pb2.Sample(event_id=f"t{i}", stream=STREAM, text=text.decode())
            producer.produce(
                topic, sample.SerializeToString(), b"k", partition=0, on_delivery=report
            )
            producer.poll(0)
    assert report.delivered == len(corpus)


def progress(path: Path) -> int:
    try:
        saved = checkpoint.load(path)
    except Exception:
        return 0
    return 0 if saved is None else sum(saved["learner"]["counts"][:3])


def test_a_killed_text_trainer_ends_with_the_parameters_of_an_uninterrupted_run(
    kafka: KafkaSettings, make_topic: Callable[..., str], tmp_path: Path, registry_service: Running
) -> None:
    topic, streams = make_topic(1), make_topic(1, "streams")
    corpus = [*texts(1500), b"", b"x"]  # nothing to predict in the last two: skipped
    definition = stream_pb2.StreamDefinition(name=STREAM, text=stream_pb2.TextSpec(max_bytes=256))
    publish_definition(kafka, streams, definition)
    produce_texts(kafka, topic, corpus)
    env = trainer_env(kafka, topic, tmp_path, registry_service.address)
    env |= {
        "TRAINER_STREAM": STREAM,
        "TRAINER_TOPICS__STREAMS": streams,
        "TRAINER_TEXT": TINY.model_dump_json(),
        "TRAINER_CHECKPOINT_EVERY_EVENTS": "50",
        "TRAINER_FETCH_MAX": "50",  # small fetches: checkpoints (and kills) land mid-stream
        "TRAINER_DEVICE": "cpu",
        "TRAINER_TORCH_THREADS": "1",  # a tiny model: threads only contend on a busy box
    }
    del env["TRAINER_CONFIG"]
    path = tmp_path / "trainer" / "demo.ckpt"
    log = tmp_path / "trainer.log"
    for target in sorted(random.Random(3).sample(range(100, 1000), 2)):
        with running(env, log) as process:
            wait_until(lambda t=target, p=process: progress(path) >= t or p.poll() is not None, 240)
            assert process.poll() is None, log.read_text()[-3000:]
            process.send_signal(signal.SIGKILL)
            process.wait()
    starts = log.read_text().count("trainer running")
    with running(env, log) as process:
        # SIGTERM once it runs (its handler checkpoints on the way out), not while importing
        wait_until(lambda: log.read_text().count("trainer running") > starts, 240)
        wait_until(lambda: progress(path) >= len(corpus) or process.poll() is not None, 240)
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, log.read_text()[-3000:]

    saved = checkpoint.load(path)
    assert saved is not None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the trainer: reductions split over threads round otherwise
    try:
        reference = TextLearner(TINY)
        reference.learn(corpus)
    finally:
        torch.set_num_threads(threads)
    resumed = TextLearner(TINY)
    resumed.restore(saved["learner"])
    assert (resumed.events, resumed.skipped) == (len(corpus) - 2, 2)
    for ours, theirs in zip(
        resumed.network.parameters(), reference.network.parameters(), strict=True
    ):
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)
    assert resumed.snapshot() == reference.snapshot()  # the metrics continued exactly too
    assert saved["positions"]["next"] == {f"{topic}:0": len(corpus)}
    assert saved["last_version"] >= 1

    with RegistryClient(registry_service.address) as registry:
        version, data = registry.download("demo")
    graph = onnx.load_from_string(data)
    assert version.version == saved["last_version"]
    assert [i.name for i in graph.graph.input] == [TEXT_INPUT]
    assert [o.name for o in graph.graph.output] == [LOGPROBS_OUTPUT]
    assert version.lineage.stream == STREAM
    assert version.lineage.stream_definition.text.max_bytes == 256
    assert json.loads(version.lineage.config_json)["context"] == TINY.context
    assert 0 < version.lineage.metrics["bits_per_byte"] < 8
    assert np.isfinite(list(version.lineage.metrics.values())).all()


def test_a_student_learns_from_a_registered_teacher_named_on_each_version(
    kafka: KafkaSettings, make_topic: Callable[..., str], tmp_path: Path, registry_service: Running
) -> None:
    topic, streams = make_topic(1), make_topic(1, "streams")
    corpus = texts(300)
    definition = stream_pb2.StreamDefinition(name=STREAM, text=stream_pb2.TextSpec(max_bytes=256))
    publish_definition(kafka, streams, definition)
    produce_texts(kafka, topic, corpus)
    teacher = TextLearner(TINY.model_copy(update={"width": 64, "heads": 4}))
    teacher.learn(corpus[:100])
    with RegistryClient(registry_service.address) as registry:
        registry.create_model("big", exist_ok=True)
        registered = registry.register("big", TextOnnxExporter(teacher).export()).version
    spec = DistillSpec(teacher="big", version=registered, weight=0.7)
    student = TINY.model_copy(update={"width": 16, "distill": spec})
    env = trainer_env(kafka, topic, tmp_path, registry_service.address)
    del env["TRAINER_CONFIG"]
    env |= {
        "TRAINER_STREAM": STREAM,
        "TRAINER_MODEL_NAME": "small",
        "TRAINER_TOPICS__STREAMS": streams,
        "TRAINER_TEXT": student.model_dump_json(),
        "TRAINER_DEVICE": "cpu",
        "TRAINER_TORCH_THREADS": "1",
    }
    log = tmp_path / "trainer.log"
    path = tmp_path / "trainer" / "small.ckpt"
    with running(env, log) as process:
        wait_until(lambda: progress(path) >= len(corpus) or process.poll() is not None, 240)
        wait_until(lambda: "version published" in log.read_text(), 60)
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0, log.read_text()[-3000:]
    with RegistryClient(registry_service.address) as registry:
        version = registry.get_version("small")
    assert version.tags["teacher"] == version.lineage.teacher == f"big:v{registered}"
    assert json.loads(version.lineage.config_json)["distill"]["teacher"] == "big"
