"""Where the store's database connections come from: one SQLite file, or a PostgreSQL pool.

A registry on PostgreSQL must outlive a restart or failover of its database. Its connections
come from a pool that checks each one before lending it and reconnects in the background, and
a connection lost under a statement surfaces as `Unavailable` (UNAVAILABLE to a client, which
retries) instead of as an internal error.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from shared.errors import Unavailable

log = logging.getLogger(__name__)

# A lost or refused connection raises within seconds, not after the kernel's TCP timeouts
# (a failed-over host may vanish without closing anything). Values in libpq's units.
_TCP = {
    "connect_timeout": 5,  # s
    "keepalives": 1,
    "keepalives_idle": 10,  # s
    "keepalives_interval": 5,  # s
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,  # ms unacknowledged before the connection is dropped
}


class Connections(Protocol):
    """A source of connections to one database."""

    dialect: str

    def acquire(self) -> Any:
        """A connection in autocommit mode with dict-like rows; Unavailable if none can be had."""
        ...

    def release(self, connection: Any) -> None:
        """Give a connection back (a broken one is discarded)."""
        ...

    def lost(self, connection: Any, error: BaseException) -> bool:
        """True when `error` means the connection itself is gone (not the statement's fault)."""
        ...

    def ping(self) -> None:
        """Return quietly if the database answers now; raise Unavailable otherwise."""
        ...

    def close(self) -> None:
        """Close every connection."""
        ...


class SqliteConnections:
    """One connection to a local file, shared under the store's lock: it cannot be lost."""

    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit (transactions are explicit), WAL, fsync on commit.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")
        self._db.execute("PRAGMA foreign_keys = ON")

    def acquire(self) -> sqlite3.Connection:  # noqa: D102 - see Connections
        return self._db

    def release(self, connection: Any) -> None:  # noqa: D102
        pass

    def lost(self, connection: Any, error: BaseException) -> bool:  # noqa: D102
        return False

    def ping(self) -> None:  # noqa: D102
        pass  # a local file is always there; a full disk fails the write that hits it

    def close(self) -> None:  # noqa: D102
        self._db.close()


class PostgresConnections:
    """A small psycopg pool that checks connections before lending them and reconnects.

    Args:
        url: postgresql://user@host:port/db.
        password: Sent separately from the URL (None: none, or from the environment).
        timeout_s: How long a statement waits for a connection while the database is known
            to be up; a reconnect after a restart fits in it.
        down_timeout_s: The same while the last check found the database down, so RPCs fail
            fast with UNAVAILABLE during an outage.
        reconnect_s: How long the pool retries one connection attempt (with backoff) before
            starting afresh; it bounds how late a recovered database is noticed.

    Raises:
        Unavailable: The database cannot be reached or refuses the login now.

    """

    dialect = "postgres"

    def __init__(
        self,
        url: str,
        password: str | None = None,
        *,
        timeout_s: float = 2.0,
        down_timeout_s: float = 0.5,
        reconnect_s: float = 5.0,
    ) -> None:
        import psycopg
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool

        self._error: type[Exception] = psycopg.Error
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "row_factory": dict_row,
            "password": password,
            **_TCP,
        }
        # A first plain connection says why the database refuses (bad password, no such
        # database), which a pool that merely timed out would not.
        try:
            psycopg.connect(url, **kwargs).close()
        except psycopg.Error as exc:
            raise Unavailable(f"cannot connect to the registry database: {exc}") from exc
        self._timeout_s, self._down_timeout_s = timeout_s, down_timeout_s
        self._reachable = threading.Event()
        self._reachable.set()
        self._pool: Any = ConnectionPool(
            url,
            kwargs=kwargs,
            # One connection serves the store (its lock serialises every call); the spares
            # let the health check and a reconnect proceed beside it.
            min_size=1,
            max_size=4,
            open=False,
            check=ConnectionPool.check_connection,
            timeout=timeout_s,
            reconnect_timeout=reconnect_s,
            name="registry",
        )
        try:
            self._pool.open(wait=True, timeout=_TCP["connect_timeout"])
        except psycopg.Error as exc:
            self._pool.close()
            raise Unavailable(f"cannot connect to the registry database: {exc}") from exc

    def acquire(self) -> Any:  # noqa: D102 - see Connections
        timeout = self._timeout_s if self._reachable.is_set() else self._down_timeout_s
        try:
            return self._pool.getconn(timeout=timeout)
        except self._error as exc:
            self._reachable.clear()
            raise Unavailable(f"the registry database is unreachable ({exc}): retry later") from exc

    def release(self, connection: Any) -> None:  # noqa: D102
        self._pool.putconn(connection)

    def lost(self, connection: Any, error: BaseException) -> bool:  # noqa: D102
        return isinstance(error, self._error) and bool(connection.closed or connection.broken)

    def ping(self) -> None:  # noqa: D102
        was_reachable = self._reachable.is_set()
        try:
            with self._pool.connection(timeout=self._timeout_s) as connection:
                connection.execute("SELECT 1")
        except self._error as exc:
            self._reachable.clear()
            raise Unavailable(f"the registry database is unreachable: {exc}") from exc
        if not was_reachable:
            # Idle connections from before the outage are dead: drop them now rather than
            # one by one under the next requests.
            self._pool.check()
        self._reachable.set()

    def close(self) -> None:  # noqa: D102
        self._pool.close(timeout=5.0)


class ConnectionLock:
    """The store's re-entrant lock; its outermost holder borrows one connection for the scope.

    Every call of one Store is serialised by it, as by a plain RLock, and the statements of
    one scope (a transaction, a read of several rows) run on one connection, which goes back
    to its source when the outermost scope ends.
    """

    def __init__(self, source: Connections) -> None:
        self._lock = threading.RLock()
        self._depth = 0
        self._source = source
        self._held: Any = None

    def __enter__(self) -> ConnectionLock:
        self._lock.acquire()
        self._depth += 1
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self._depth -= 1
            if self._depth == 0:
                self.drop()
        finally:
            self._lock.release()

    def connection(self) -> Any:
        """The scope's connection, borrowed on first use (call with the lock held)."""
        if self._held is None:
            self._held = self._source.acquire()
        return self._held

    @property
    def borrowed(self) -> bool:
        """True while the scope holds a connection."""
        return self._held is not None

    def drop(self) -> None:
        """Give the scope's connection back (a lost one: the next use borrows another)."""
        held, self._held = self._held, None
        if held is not None:
            self._source.release(held)
