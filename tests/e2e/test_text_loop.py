"""A language model learning a text stream, end to end, as `streamlearn up` runs it.

Texts go in through the SDK, ingestion validates them (an empty one is a dead letter), the
trainer's byte language model learns them, its versions reach the registry, and inference
serves them: next-byte log-probabilities over KServe V2, and a generated continuation,
whole and streamed, the same bytes as greedy decoding of the registered version here.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from confluent_kafka.admin import AdminClient

from services.trainer.text.config import TextModelConfig
from services.trainer.text.export import LOGPROBS_OUTPUT, TEXT_INPUT
from shared import samples
from shared.clients.registry import RegistryClient
from shared.kafka.admin import ensure_topics, standard_topics
from shared.kafka.config import admin_config
from shared.ort import make_session
from shared.settings import KafkaSettings, TopicSettings
from shared.streams import publish_definition
from shared.text_generation import Decoding, continue_bytes
from streamlearn.client import SampleProducer
from streamlearn.client.inference import InferenceClient
from streamlearn.system.control import LocalSystem
from streamlearn.v1 import stream_pb2
from tests.e2e.system import SERVICES
from tests.helpers import read_all, version_numbers, wait_until

STREAM = "prose"
TINY = TextModelConfig(layers=1, width=32, heads=2, context=32, metrics_window=50)
SENTENCE = "the cat sat on the mat. "


@pytest.fixture
def system_stream() -> str:
    return STREAM


@pytest.fixture
def system_overrides(kafka: KafkaSettings) -> dict[str, str]:
    """Every service reads stream definitions from a topic where `prose` is a text stream.

    Defined before `up`: the trainer picks its model by the definition it finds at start.
    """
    topics = TopicSettings(streams=f"e2e.text.{uuid.uuid4().hex[:8]}.streams")
    [spec] = [s for s in standard_topics(topics) if s.name == topics.streams]
    ensure_topics(AdminClient(admin_config(kafka)), [spec])
    definition = stream_pb2.StreamDefinition(name=STREAM, text=stream_pb2.TextSpec(max_bytes=512))
    publish_definition(kafka, topics.streams, definition)
    env = {f"{service.upper()}_TOPICS__STREAMS": topics.streams for service in SERVICES}
    return env | {
        "TRAINER_TEXT": TINY.model_dump_json(),
        "TRAINER_TORCH_THREADS": "1",
        "TRAINER_VERSION_EVERY_EVENTS": "200",
    }


def test_texts_are_learned_and_the_served_model_continues_a_prompt(
    kafka: KafkaSettings, system: tuple[LocalSystem, TopicSettings]
) -> None:
    local, topics = system
    address = {s.name: s.address for s in local.plan()}
    texts = [SENTENCE * (1 + i % 3) for i in range(600)]
    with SampleProducer(kafka=kafka, topic=topics.raw, stream=STREAM) as producer:
        for i, text in enumerate(texts):
            producer.send({"key": f"doc-{i % 7}", "text": text})
        producer.send({"key": "doc-x", "text": ""})  # nothing to learn: a dead letter
        producer.flush()
    registry = RegistryClient(address["registry"])
    wait_until(lambda: version_numbers(registry, STREAM) != [], 180, pause=0.5)
    wait_until(lambda: registry.get_version(STREAM).lineage.events_seen == len(texts), 180, 0.5)
    newest, onnx_bytes = registry.download(STREAM)
    registry.close()
    assert newest.lineage.stream_definition.text.max_bytes == 512
    assert newest.lineage.metrics["bits_per_byte"] < 8.0  # better than knowing nothing
    [dead] = read_all(kafka, topics.dlq, 1)
    assert samples.header(samples.headers_of(dead), samples.REASON) == b"missing_text"

    with InferenceClient(address["inference"]) as client:
        wait_until(lambda: _serves(client, newest.version), 120, pause=0.5)
        prompt = b"the cat "
        [logprobs] = client.score_text(STREAM, [prompt], version=newest.version)
        assert logprobs.shape == (len(prompt), 256)
        assert np.allclose(np.exp(logprobs).sum(axis=1), 1.0, atol=1e-4)
        generated = client.generate(STREAM, prompt, 24, version=newest.version)
        streamed = b"".join(client.generate_stream(STREAM, prompt, 24, chunk_bytes=5))
    # The registered version, greedy, in this process: the bytes the server generated.
    session = make_session(onnx_bytes, "cpu")

    def scorer(window: np.ndarray) -> np.ndarray:
        scores: np.ndarray = session.run([LOGPROBS_OUTPUT], {TEXT_INPUT: window})[0][0, -1]
        return scores

    expected = bytes(continue_bytes(scorer, prompt, 24, TINY.context, Decoding()))
    assert generated == streamed == expected and len(generated) == 24


def _serves(client: InferenceClient, version: int) -> bool:
    try:
        client.score_text(STREAM, [b"ab"], version=version)
    except Exception:
        return False
    return True
