"""The registry service through real gRPC, with model events on the real broker."""

from __future__ import annotations

import hashlib
import itertools
import threading
import uuid

import grpc
import pytest

from services.registry.settings import RegistrySettings
from shared.clients.registry import RegistryClient
from shared.errors import Conflict, IntegrityError, NotFound
from shared.settings import KafkaSettings
from streamlearn.v1 import events_pb2, registry_pb2, registry_pb2_grpc
from tests.helpers import read_all
from tests.integration.conftest import Running


@pytest.fixture
def settings(registry_settings: RegistrySettings) -> RegistrySettings:
    return registry_settings


@pytest.fixture
def service(registry_service: Running) -> Running:
    return registry_service


@pytest.fixture
def client(registry_client: RegistryClient) -> RegistryClient:
    return registry_client


def test_unknown_model_or_version_is_not_found(client: RegistryClient) -> None:
    with pytest.raises(NotFound):
        client.get_version("ghost")
    client.create_model("m")
    with pytest.raises(NotFound, match="no version 3"):
        client.get_version("m", 3)
    with pytest.raises(NotFound):
        client.download("m", alias="production")


def test_corrupt_or_truncated_upload_is_rejected_and_leaves_nothing(
    client: RegistryClient, service: Running, settings: RegistrySettings
) -> None:
    client.create_model("m")
    stub = registry_pb2_grpc.ModelRegistryStub(grpc.insecure_channel(service.address))
    data = b"x" * 3_000_000
    header = registry_pb2.RegisterVersionHeader(
        model="m", sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data)
    )
    for sent in (data[:-1] + b"y", data[: len(data) // 2]):  # corrupt, then truncated
        parts = [
            registry_pb2.RegisterVersionRequest(header=header),
            registry_pb2.RegisterVersionRequest(chunk=sent),
        ]
        with pytest.raises(grpc.RpcError) as raised:
            stub.RegisterVersion(iter(parts))
        assert raised.value.code() == grpc.StatusCode.DATA_LOSS
    assert client.list_versions("m").versions == []
    leftovers = [p for p in settings.resolved_artifact_dir.rglob("*") if p.is_file()]
    assert leftovers == []


def test_upload_download_roundtrip_in_chunks(client: RegistryClient) -> None:
    client.create_model("m")
    data = bytes(range(256)) * 20_000  # 5 MB: several chunks, above gRPC's 4 MiB default
    lineage = registry_pb2.Lineage(
        stream="clicks",
        events_seen=42,
        metrics={"logloss": 0.4},
        offsets=[registry_pb2.OffsetRange(topic="t", next_offset=42)],
    )
    registered = client.register("m", data, lineage=lineage, tags={"run": "r1"})
    meta, back = client.download("m", registered.version)
    assert back == data
    assert meta.lineage == lineage and meta.tags["run"] == "r1"


def test_two_concurrent_alias_moves_with_the_same_expectation_one_wins(
    client: RegistryClient,
) -> None:
    client.create_model("m")
    for i in range(3):
        client.register("m", f"v{i}".encode())
    client.set_alias("m", "production", 1)
    barrier, results = threading.Barrier(2), {}

    def move(version: int) -> None:
        with RegistryClient(client.address) as own:
            barrier.wait()
            try:
                own.set_alias("m", "production", version, expected=1)
                results[version] = "won"
            except Conflict:
                results[version] = "lost"

    threads = [threading.Thread(target=move, args=(v,)) for v in (2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results.values()) == ["lost", "won"]
    winner = next(v for v, r in results.items() if r == "won")
    assert client.get_version("m", alias="production").version == winner


def test_a_restart_loses_nothing(settings: RegistrySettings) -> None:
    first = Running(settings)
    with RegistryClient(first.address) as client:
        client.create_model("m")
        client.register("m", b"weights-1")
        client.register("m", b"weights-2")
        client.set_alias("m", "production", 2, reason="first deploy")
    first.close()
    second = Running(settings)
    try:
        with RegistryClient(second.address) as client:
            meta, data = client.download("m", alias="production")
            assert (meta.version, data) == (2, b"weights-2")
            assert client.history("m")[0].reason == "first deploy"
            assert client.register("m", b"weights-3").version == 3
    finally:
        second.close()


def test_model_events_arrive_on_kafka_in_version_order(
    client: RegistryClient, service: Running, settings: RegistrySettings, kafka: KafkaSettings
) -> None:
    model = f"m{uuid.uuid4().hex[:6]}"
    client.create_model(model)
    for i in range(20):
        client.register(model, f"weights-{i}".encode())
    client.set_alias(model, "candidate", 20)
    client.promote(model)
    records = read_all(kafka, settings.topics.model_events, 23)
    events = [events_pb2.ModelEvent.FromString(m.value()) for m in records]
    assert all(m.key() == model.encode() for m in records)
    registered = [
        e.version for e in events if e.type == events_pb2.MODEL_EVENT_TYPE_VERSION_REGISTERED
    ]
    assert registered == list(range(1, 21))
    sequences = [e.sequence for e in events]
    assert sequences == sorted(set(sequences)) and len(events) == 23
    assert events[-1].type == events_pb2.MODEL_EVENT_TYPE_PROMOTED
    assert (events[-1].alias, events[-1].version) == ("production", 20)


def test_watch_streams_new_events(client: RegistryClient) -> None:
    client.create_model("w")
    stream = client.watch("w")
    seen: list[events_pb2.ModelEvent] = []
    reader = threading.Thread(target=lambda: seen.extend(itertools.islice(stream, 2)))
    reader.start()
    for _ in range(50):  # the server-side stream opens asynchronously
        if reader.is_alive():
            client.register("w", uuid.uuid4().bytes)
        reader.join(0.1)
        if not reader.is_alive():
            break
    assert [e.type for e in seen] == [events_pb2.MODEL_EVENT_TYPE_VERSION_REGISTERED] * 2


def test_corruption_on_disk_is_reported_as_data_loss(
    client: RegistryClient, settings: RegistrySettings
) -> None:
    client.create_model("m")
    version = client.register("m", b"good bytes")
    path = next(settings.resolved_artifact_dir.rglob(version.artifact.sha256))
    path.write_bytes(b"evil bytes")
    with pytest.raises(IntegrityError):
        client.download("m", version.version)


def test_policy_promotes_better_candidates_and_rolls_back_live_degradation(
    registry_settings: RegistrySettings,
) -> None:
    service = Running(registry_settings.model_copy(update={"policy_metric": "logloss"}))
    try:
        with RegistryClient(service.address) as client:
            client.create_model("p")
            for loss in (0.5, 0.6, 0.3):
                v = client.register(
                    "p", uuid.uuid4().bytes, lineage=registry_pb2.Lineage(metrics={"logloss": loss})
                )
                client.set_alias("p", "candidate", v.version)
            assert client.get_version("p", alias="production").version == 3
            ignored = client.report_live_metric("p", 3, "accuracy", 0.1)
            assert not ignored.rolled_back
            reply = client.report_live_metric("p", 3, "logloss", 0.8, window_events=1000)
            assert reply.rolled_back and reply.audit.to_version == 1
            assert client.get_version("p", alias="production").version == 1
            assert client.history("p")[0].reason.startswith("policy: live logloss=0.8")
    finally:
        service.close()
