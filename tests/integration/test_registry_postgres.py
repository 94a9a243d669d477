"""The registry's core suite again, on PostgreSQL instead of SQLite (same schema, same rules)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.registry.artifacts import LocalArtifactStore
from services.registry.model import Event
from services.registry.names import SERVICE
from services.registry.registry import Registry
from services.registry.settings import RegistrySettings
from services.registry.store import Store
from shared.clients.registry import RegistryClient
from shared.errors import Unavailable
from streamlearn.v1 import registry_pb2, registry_pb2_grpc
from tests.integration.conftest import Running
from tests.postgres import PostgresServer, postgres_cluster
from tests.unit.test_registry_core import *  # noqa: F403 - re-run every test of the core suite
from tests.unit.test_registry_core import Make

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def make(postgres_url: str) -> Iterator[Make]:
    stores: list[Store] = []

    def on_postgres(root: Path) -> Registry:
        store = Store(postgres_url)
        assert store.dialect == "postgres"
        stores.append(store)
        return Registry(store, LocalArtifactStore(root / "artifacts"))

    yield on_postgres
    for store in stores:  # each holds a pool of connections: the server's are limited
        store.close()


def test_the_registry_service_runs_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    from services.registry.settings import RegistrySettings

    settings = RegistrySettings(state_dir=tmp_path, db_url=postgres_url)
    first = Registry(Store(settings.database), LocalArtifactStore(settings.resolved_artifact_dir))
    first.create_model("pg")
    again = Registry(Store(settings.database), LocalArtifactStore(settings.resolved_artifact_dir))
    assert again.get_model("pg").name == "pg"


def test_two_replicas_on_one_database_cannot_both_win_a_compare_and_set(
    postgres_url: str, tmp_path: Path
) -> None:
    import hashlib
    import threading

    from shared.errors import Conflict

    replicas = [Registry(Store(postgres_url), LocalArtifactStore(tmp_path / "a")) for _ in range(2)]
    replicas[0].create_model("m")
    for data in (b"1", b"2", b"3"):
        replicas[0].register_version("m", [data], hashlib.sha256(data).hexdigest(), len(data))
    replicas[0].set_alias("m", "production", 1)
    for _ in range(10):  # repeat: the interleaving differs from run to run
        current = replicas[0].get_model("m").aliases["production"]
        targets = [v for v in (1, 2, 3) if v != current]
        barrier, outcomes = threading.Barrier(2), []

        def move(
            replica: Registry,
            target: int,
            expected: int = current,
            barrier: threading.Barrier = barrier,
            outcomes: list[str] = outcomes,
        ) -> None:
            barrier.wait()
            try:
                replica.set_alias("m", "production", target, expected=expected)
                outcomes.append("won")
            except Conflict:
                outcomes.append("lost")

        threads = [
            threading.Thread(target=move, args=(r, t))
            for r, t in zip(replicas, targets, strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes) == ["lost", "won"]


# --- connections lost under the store (a backend killed, the server restarted) ---------------


def _kill(admin: psycopg.Connection[Any], store: Store) -> None:
    """End the server session behind the store's current connection, and wait for it."""
    pid = store.lock.connection().info.backend_pid
    admin.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))


def test_a_connection_killed_under_a_transaction_fails_it_and_a_read_recovers(
    postgres_url: str, tmp_path: Path
) -> None:
    store = Store(postgres_url)
    registry = Registry(store, LocalArtifactStore(tmp_path / "artifacts"))
    try:
        registry.create_model("m")
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            with pytest.raises(Unavailable, match="retry later"), store.transaction():
                store.insert_model("n", "")
                _kill(admin, store)
                store.add_event(Event(0, "MODEL_CREATED", "n"))
            assert [m.name for m in registry.list_models(10)[0]] == ["m"]  # nothing applied

            with store.lock:  # one scope, one connection: it dies between two reads
                model_id = store.model_id("m")
                _kill(admin, store)
                assert store.model_id("m") == model_id  # retried on a fresh connection
        assert registry.create_model("n").name == "n"
    finally:
        store.close()


# --- a database restart under a running registry (failover) ----------------------------------


@pytest.fixture
def database() -> Iterator[PostgresServer]:
    """A PostgreSQL of this test's own, which it stops and starts under the registry."""
    with postgres_cluster() as server:
        yield server


def _health(channel: grpc.Channel, service: str = SERVICE) -> int:
    stub = health_pb2_grpc.HealthStub(channel)  # type: ignore[no-untyped-call]
    reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    return int(reply.status)


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"still not {what} after {timeout} s"
        time.sleep(0.1)


def test_a_database_restart_is_reported_and_survived_without_losing_data(
    database: PostgresServer, registry_settings: RegistrySettings
) -> None:
    settings = registry_settings.model_copy(
        update={"db_url": f"{database.url}/postgres", "db_check_interval_s": 0.2}
    )
    service = Running(settings)
    channel = grpc.insecure_channel(service.address)
    stub = registry_pb2_grpc.ModelRegistryStub(channel)  # type: ignore[no-untyped-call]
    try:
        with RegistryClient(service.address, timeout=30) as client:
            client.create_model("m")
            first = client.register("m", b"version one")
            client.set_alias("m", "production", first.version)
            _wait_for(lambda: _health(channel) == SERVING, "serving")

            database.stop()
            _wait_for(lambda: _health(channel) == NOT_SERVING, "NOT_SERVING with the database down")
            assert _health(channel, "") == SERVING  # the process lives on: no restart needed
            with pytest.raises(grpc.RpcError) as raised:
                stub.GetModel(registry_pb2.GetModelRequest(name="m"), timeout=30)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "registry database" in (raised.value.details() or "")
            with pytest.raises(Unavailable):
                client.set_alias("m", "candidate", first.version)
            with pytest.raises(Unavailable):
                client.register("m", b"written during the outage")

            database.start()
            _wait_for(lambda: _health(channel) == SERVING, "serving again")
            model = stub.GetModel(registry_pb2.GetModelRequest(name="m"), timeout=30)
            assert dict(model.aliases) == {"production": first.version}
            assert model.latest_version == first.version  # nothing half-written in the outage
            assert client.download("m", first.version)[1] == b"version one"
            second = client.register("m", b"version two")
            assert second.version == first.version + 1
            client.set_alias("m", "candidate", second.version)
            assert [r.to_version for r in client.history("m")] == [second.version, first.version]
    finally:
        channel.close()
        service.close()
