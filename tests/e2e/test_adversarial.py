"""Hostile input through the whole system: nothing lost, nothing twice, nothing crashed, and
each stream's trainer learns exactly its own stream's events.

Two streams with the same feature count share the raw and training topics; `streamlearn up`
runs the trainer of the first, a second trainer process learns the second. The corpus of
`tests.adversarial` (dozens of kinds of malformed records any Kafka client can write) is
interleaved with valid samples of both, then the same corpus goes through gRPC `Ingest`, and
finally more of it flows while ingestion is SIGKILLed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from confluent_kafka import Message, Producer
from google.protobuf.message import DecodeError

from bench.processes import service, topics_env
from services.ingestion.settings import IngestionSettings
from services.trainer.app import HEALTH_NAME as TRAINER_HEALTH
from shared import samples
from shared.clients.registry import RegistryClient
from shared.errors import NotFound
from shared.kafka.config import producer_config
from shared.net import free_port
from shared.settings import KafkaSettings, TopicSettings
from shared.streams import publish_definition
from streamlearn.system.control import LocalSystem
from streamlearn.v1 import ingest_pb2, ingest_pb2_grpc, sample_pb2
from tests import adversarial
from tests.e2e.system import SERVICES, logistic_config, restarts, service_state
from tests.helpers import read_to_end, record_count, wait_until

STREAMS = ("adv-a", "adv-b")
NO_RESTARTS = dict.fromkeys(SERVICES, 0)


@pytest.fixture
def system_stream() -> str:
    return STREAMS[0]


@pytest.fixture
def second_trainer(
    kafka: KafkaSettings, system: tuple[LocalSystem, TopicSettings], tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A trainer of the second stream on the same training topic, beside the system's."""
    local, topics = system
    registry = next(s.address for s in local.plan() if s.name == "registry")
    port = free_port()
    env = {
        "TRAINER_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "TRAINER_STATE_DIR": str(tmp_path / "second"),
        "TRAINER_REGISTRY_ADDRESS": registry,
        "TRAINER_STREAM": STREAMS[1],
        "TRAINER_MODEL_NAME": STREAMS[1],
        "TRAINER_CONSUMER_GROUP": f"second-trainer-{topics.train}",
        "TRAINER_TRAINER_ID": "second",
        "TRAINER_CONFIG": logistic_config(adversarial.FEATURES),
        "TRAINER_VERSION_EVERY_S": "0.5",
        "TRAINER_GRPC_PORT": str(port),
        "TRAINER_METRICS_PORT": "0",
        **topics_env("TRAINER_", topics),
    }
    log = tmp_path / "second-trainer.log"
    with service("services.trainer", env, f"127.0.0.1:{port}", TRAINER_HEALTH, log, 120) as child:
        yield child


@pytest.mark.timeout(900)  # the whole system, two phases of hostile traffic, a restart
def test_hostile_records_lose_nothing_crash_nothing_and_train_only_their_own_stream(
    kafka: KafkaSettings,
    system: tuple[LocalSystem, TopicSettings],
    second_trainer: subprocess.Popen[bytes],
) -> None:
    local, topics = system
    address = {s.name: s.address for s in local.plan()}
    for stream in STREAMS:
        publish_definition(kafka, topics.streams, adversarial.definition(stream))
    oversize = IngestionSettings().max_message_bytes + 1024
    corpus = adversarial.build(STREAMS, "first", oversize)
    assert len(corpus.classes) >= 25

    _produce(kafka, topics.raw, corpus.records)
    _check_routed(kafka, topics, [corpus])
    registry = RegistryClient(address["registry"])
    _check_learned(registry, [corpus])
    assert restarts(local) == NO_RESTARTS
    assert second_trainer.poll() is None

    raw_before = record_count(kafka, topics.raw)
    refused = _check_grpc_refuses(address["ingestion"], corpus)
    assert refused >= 25
    assert record_count(kafka, topics.raw) == raw_before  # nothing written

    # More of the same while ingestion is SIGKILLed mid-flow: still exactly once.
    more = [adversarial.build(STREAMS, f"kill{i}", oversize, seed=i) for i in range(12)]
    routed_before = _records_out(kafka, topics)
    sender = threading.Thread(target=_produce_paced, args=(kafka, topics.raw, more))
    sender.start()
    wait_until(lambda: _records_out(kafka, topics) > routed_before + 200, 60, pause=0.01)
    os.kill(int(service_state(local, "ingestion")["pid"]), signal.SIGKILL)  # type: ignore[call-overload]
    sender.join(60)
    wait_until(lambda: restarts(local)["ingestion"] == 1, 60, pause=0.2)
    _check_routed(kafka, topics, [corpus, *more])
    _check_learned(registry, [corpus, *more])
    assert restarts(local) == {**NO_RESTARTS, "ingestion": 1}
    assert second_trainer.poll() is None
    registry.close()


def _produce(kafka: KafkaSettings, topic: str, records: list[adversarial.Record]) -> None:
    producer = Producer(producer_config(kafka, **{"message.max.bytes": 8 * 1024 * 1024}))
    for record in records:
        producer.produce(topic, record.value, record.key, headers=record.headers)
        producer.poll(0)
    assert producer.flush(30) == 0


def _produce_paced(kafka: KafkaSettings, topic: str, corpora: list[adversarial.Corpus]) -> None:
    for corpus in corpora:  # about three seconds of hostile traffic
        _produce(kafka, topic, corpus.records)
        time.sleep(0.25)


def _records_out(kafka: KafkaSettings, topics: TopicSettings) -> int:
    return record_count(kafka, topics.train) + record_count(kafka, topics.dlq)


def _check_routed(
    kafka: KafkaSettings, topics: TopicSettings, corpora: list[adversarial.Corpus]
) -> None:
    """Every valid event once in training, of its own stream; every bad one once as a dead
    letter with its reason; nothing else."""
    valid = Counter((s, e) for c in corpora for s, ids in c.valid.items() for e in ids)
    cases = {b.name: b.reason for c in corpora for b in c.bad}
    rows = {(r.event_id, r.row): r.reason for c in corpora for r in c.bad_rows}

    def complete() -> bool:
        trained = sum(len(_trained(m)) for m in read_to_end(kafka, topics.train))
        return trained >= len(valid) and record_count(kafka, topics.dlq) >= len(cases) + len(rows)

    deadline = time.monotonic() + 120
    while not complete() and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2.0)  # anything routed twice would arrive now; what is missing shows below
    trained = Counter(pair for m in read_to_end(kafka, topics.train) for pair in _trained(m))
    assert trained == valid
    dead = [_dead(m) for m in read_to_end(kafka, topics.dlq)]
    by_case = Counter(name for name, _, _ in dead if name)
    assert by_case == Counter(cases.keys()), "every bad record once as a dead letter"
    assert {name: reason for name, _, reason in dead if name} == cases
    dead_rows = [(row, reason) for name, row, reason in dead if not name]
    assert Counter(r for r, _ in dead_rows) == Counter(rows.keys())
    assert dict(dead_rows) == rows


def _trained(message: Message) -> list[tuple[str, str]]:
    """(stream, event id) of each event of a training record."""
    value = message.value() or b""
    if samples.is_batch(samples.headers_of(message)):
        batch = sample_pb2.SampleBatch.FromString(value)
        return [(batch.stream, e) for e in batch.event_ids]
    sample = sample_pb2.Sample.FromString(value)
    return [(sample.stream, sample.event_id)]


def _dead(message: Message) -> tuple[str, tuple[str, int], str]:
    """(case, (event id, row) for a rejected batch row, reason) of a dead letter."""
    headers = samples.headers_of(message)
    reason = (samples.header(headers, samples.REASON) or b"").decode()
    case = samples.header(headers, adversarial.CASE)
    if case is not None:
        return case.decode(), ("", -1), reason
    event_id = (samples.header(headers, samples.EVENT_ID) or b"").decode()
    (row,) = np.frombuffer(samples.header(headers, samples.ROWS) or b"", dtype="<i4").tolist()
    return "", (event_id, row), reason


def _check_learned(registry: RegistryClient, corpora: list[adversarial.Corpus]) -> None:
    """Each stream's newest version has learned exactly that stream's valid events."""
    for stream in STREAMS:
        expected = sum(len(c.valid[stream]) for c in corpora)
        wait_until(lambda s=stream, n=expected: _events_seen(registry, s) >= n, 120, pause=0.2)
        time.sleep(1.5)  # a few version intervals: a trainer learning more would show it
        assert _events_seen(registry, stream) == expected, stream


def _events_seen(registry: RegistryClient, model: str) -> int:
    try:
        return int(registry.get_version(model).lineage.events_seen)
    except NotFound:
        return 0


def _check_grpc_refuses(address: str, corpus: adversarial.Corpus) -> int:
    """Each bad case that is a typed request is refused whole by Ingest and IngestStream."""
    channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", -1)])
    stub = ingest_pb2_grpc.IngestionStub(channel)  # type: ignore[no-untyped-call]
    refused = 0
    for request in _requests(corpus):
        for call in (stub.Ingest, lambda r: stub.IngestStream(iter([r]))):
            with pytest.raises(grpc.RpcError) as error:
                call(request)
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
        refused += 1
    channel.close()
    return refused


def _requests(corpus: adversarial.Corpus) -> Iterator[ingest_pb2.IngestRequest]:
    """The corpus' bad records that a gRPC caller can send (typed messages; the front door
    knows no history, so re-sent duplicates are left out), and its mixed batch."""
    for case in corpus.bad:
        if case.reason == "duplicate" or case.record.value is None:
            continue
        content_type = samples.header(case.record.headers, samples.CONTENT_TYPE)
        try:
            if content_type == samples.SAMPLE_TYPE:
                yield ingest_pb2.IngestRequest(
                    samples=[sample_pb2.Sample.FromString(case.record.value)]
                )
            elif content_type == samples.BATCH_TYPE:
                yield ingest_pb2.IngestRequest(
                    batch=sample_pb2.SampleBatch.FromString(case.record.value)
                )
        except DecodeError:  # bytes no typed request can carry
            continue
    assert corpus.mixed_batch is not None
    mixed = sample_pb2.SampleBatch.FromString(corpus.mixed_batch.value or b"")
    yield ingest_pb2.IngestRequest(batch=mixed)
