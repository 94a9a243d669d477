"""The store through lost connections, and the health that follows the database.

A fault-injecting source of connections (over a real SQLite file) loses a connection exactly
where a test says, as a PostgreSQL restart would: the server drops what was in flight and the
connection is dead. tests/integration/test_registry_postgres.py does it for real.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import HealthServicer

from services.registry.app import _set_health
from services.registry.artifacts import LocalArtifactStore
from services.registry.connections import ConnectionLock, SqliteConnections
from services.registry.dbwatch import DatabaseWatch
from services.registry.names import SERVICE
from services.registry.registry import Registry
from services.registry.store import Store
from shared.errors import NotFound, Unavailable


class Lost(Exception):
    """What the driver raises when the server went away under a statement."""


class FlakyConnection:
    """Passes statements to SQLite until its source says to lose the next matching one."""

    def __init__(self, source: FlakySource) -> None:
        self.source = source
        self.broken = False

    def execute(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        if self.broken:
            raise Lost("the connection is closed")
        db = self.source.db
        if self.source.lose and sql.lstrip().upper().startswith(self.source.lose[0]):
            self.source.lose.pop(0)
            if sql == "COMMIT" and self.source.commit_applies:
                db.execute("COMMIT")  # the server committed; only its answer was lost
            elif db.in_transaction:
                db.execute("ROLLBACK")  # the server rolls back what the dead session began
            self.broken = True
            raise Lost("server closed the connection unexpectedly")
        return db.execute(sql, args)


class FlakySource:
    """Connections over one SQLite file; `lose` lists statement prefixes to fail, in order."""

    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self.db = SqliteConnections(path).acquire()
        self.lose: list[str] = []
        self.commit_applies = False
        self.lent = 0
        self.returned: list[FlakyConnection] = []

    def acquire(self) -> FlakyConnection:
        self.lent += 1
        return FlakyConnection(self)

    def release(self, connection: Any) -> None:
        self.returned.append(connection)

    def lost(self, connection: Any, error: BaseException) -> bool:
        return isinstance(error, Lost) and bool(connection.broken)

    def ping(self) -> None:
        pass

    def close(self) -> None:
        self.db.close()


@pytest.fixture
def source(tmp_path: Path) -> FlakySource:
    return FlakySource(tmp_path / "db.sqlite")


@pytest.fixture
def registry(source: FlakySource, tmp_path: Path) -> Registry:
    registry = Registry(Store(source), LocalArtifactStore(tmp_path / "artifacts"))
    registry.create_model("m")
    return registry


def models(source: FlakySource) -> list[str]:
    return [row["name"] for row in source.db.execute("SELECT name FROM models ORDER BY name")]


def test_a_read_whose_connection_is_lost_is_retried_once_on_a_fresh_connection(
    registry: Registry, source: FlakySource
) -> None:
    source.lose = ["SELECT"]
    lent = source.lent
    assert registry.get_model("m").name == "m"
    assert source.lent == lent + 2  # the dead one went back (to be discarded), another came


def test_a_read_lost_twice_is_unavailable_not_an_internal_error(
    registry: Registry, source: FlakySource
) -> None:
    source.lose = ["SELECT", "SELECT"]
    with pytest.raises(Unavailable, match="registry database is unreachable"):
        registry.get_model("m")
    assert registry.get_model("m").name == "m"  # and the next call works


def test_a_transaction_whose_connection_is_lost_fails_and_applies_nothing(
    registry: Registry, source: FlakySource
) -> None:
    source.lose = ["INSERT"]  # the model row is written, then the event insert is lost
    with pytest.raises(Unavailable, match="retry later"):
        registry.create_model("n")
    assert models(source) == ["m"]
    assert registry.create_model("n").name == "n"  # the client's retry applies it once
    assert models(source) == ["m", "n"]


def test_a_read_inside_a_transaction_is_not_retried_alone(
    registry: Registry, source: FlakySource
) -> None:
    source.lose = ["SELECT"]  # the transaction's first read: its BEGIN died with it
    lent = source.lent
    with pytest.raises(Unavailable):
        registry.create_model("n")
    assert source.lent == lent + 1
    assert models(source) == ["m"]


def test_a_transaction_whose_begin_is_lost_starts_again_on_a_fresh_connection(
    registry: Registry, source: FlakySource
) -> None:
    source.lose = ["BEGIN"]
    assert registry.create_model("n").name == "n"
    assert models(source) == ["m", "n"]
    assert [e.type for e in registry.events_after(0)] == ["MODEL_CREATED", "MODEL_CREATED"]


def test_a_commit_whose_answer_is_lost_says_the_outcome_is_unknown(
    registry: Registry, source: FlakySource
) -> None:
    source.lose, source.commit_applies = ["COMMIT"], True
    with pytest.raises(Unavailable, match="may or may not have been applied"):
        registry.create_model("n")
    assert models(source) == ["m", "n"]  # it was: a client re-reads before retrying


def test_a_failure_that_is_not_a_lost_connection_is_not_retried(
    registry: Registry, source: FlakySource
) -> None:
    with pytest.raises(NotFound):
        registry.get_model("ghost")
    source.db.execute("DROP TABLE audit")
    with pytest.raises(sqlite3.OperationalError):
        registry.history("m")


def test_one_connection_serves_a_whole_scope_and_goes_back_at_its_end(
    source: FlakySource,
) -> None:
    lock = ConnectionLock(source)
    with lock:
        first = lock.connection()
        with lock:
            assert lock.connection() is first
        assert lock.borrowed
    assert not lock.borrowed
    assert source.returned == [first]
    with lock:
        assert lock.connection() is not first


# --- health follows the database -------------------------------------------------------------


class Database:
    def __init__(self) -> None:
        self.up = True
        self.pings = 0

    def ping(self) -> None:
        self.pings += 1
        if not self.up:
            raise Unavailable("the registry database is unreachable: connection refused")


def test_the_watch_reports_each_change_of_reachability_once() -> None:
    database, changes = Database(), []
    watch = DatabaseWatch(database.ping, changes.append)
    assert watch.check() is True
    database.up = False
    assert [watch.check(), watch.check()] == [False, False]
    database.up = True
    assert watch.check() is True
    assert changes == [False, True]
    assert database.pings == 4


def test_the_registry_service_is_not_serving_while_its_database_is_down() -> None:
    health = HealthServicer()
    health.set("", health_pb2.HealthCheckResponse.SERVING)
    database = Database()
    watch = DatabaseWatch(database.ping, lambda reachable: _set_health(health, reachable))

    def status(service: str) -> int:
        request = health_pb2.HealthCheckRequest(service=service)
        return int(health.Check(request, None).status)

    database.up = False
    watch.check()
    assert status(SERVICE) == health_pb2.HealthCheckResponse.NOT_SERVING
    assert status("") == health_pb2.HealthCheckResponse.SERVING  # liveness: no restart loop
    database.up = True
    watch.check()
    assert status(SERVICE) == health_pb2.HealthCheckResponse.SERVING


def test_the_watch_thread_pings_until_stopped() -> None:
    database = Database()
    watch = DatabaseWatch(database.ping, lambda _: None, interval_s=0.01)
    watch.start()
    try:
        deadline = time.monotonic() + 30
        while database.pings < 3:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        watch.stop()
    pings = database.pings
    time.sleep(0.05)
    assert database.pings == pings
