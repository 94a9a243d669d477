"""Registry metadata in SQLite or PostgreSQL: rows in, domain objects out (rules: registry.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from services.registry.connections import (
    ConnectionLock,
    Connections,
    PostgresConnections,
    SqliteConnections,
)
from services.registry.model import (
    Audit,
    Event,
    Lineage,
    ModelInfo,
    OffsetRange,
    Version,
    VersionFilter,
)
from services.registry.schema import migrate
from shared.errors import Conflict, NotFound, Unavailable


class Store:
    """Registry metadata in SQLite (a file) or PostgreSQL (a URL), through one schema.

    Every call of one Store is serialised by its lock. Across registry replicas sharing a
    PostgreSQL database, transactions are SERIALIZABLE: a concurrent compare-and-set loses
    with Conflict instead of overwriting.

    A lost PostgreSQL connection (a database restart or failover) raises Unavailable: a read
    outside a transaction is retried once on a fresh connection first, a transaction never
    is (the client retries the whole call, so no change is applied twice).
    """

    def __init__(self, target: Path | str | Connections, password: str | None = None) -> None:
        """Open (and migrate) the database.

        Args:
            target: A SQLite file, a postgresql:// URL, or a source of connections.
            password: PostgreSQL's, kept out of the URL.

        Raises:
            Unavailable: PostgreSQL cannot be reached now.

        """
        self._connections: Connections
        if isinstance(target, str) and target.startswith(("postgresql://", "postgres://")):
            self._connections = PostgresConnections(target, password)
        elif isinstance(target, str | Path):
            self._connections = SqliteConnections(Path(target))
        else:
            self._connections = target
        self.dialect = self._connections.dialect
        self._begin = (
            "BEGIN ISOLATION LEVEL SERIALIZABLE"
            if self.dialect == "postgres"
            else "BEGIN IMMEDIATE"
        )
        self.lock = ConnectionLock(self._connections)
        self._in_transaction = False
        try:
            with self.lock:
                migrate(self.lock.connection(), self.dialect, self._begin, self._placeholder)
        except BaseException:
            self._connections.close()
            raise

    def close(self) -> None:
        """Close the database."""
        with self.lock:
            self.lock.drop()
            self._connections.close()

    def ping(self) -> None:
        """Return quietly if the database answers now (without waiting for the lock).

        Raises:
            Unavailable: It does not.

        """
        self._connections.ping()

    @property
    def _placeholder(self) -> str:
        return "%s" if self.dialect == "postgres" else "?"

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All statements inside commit together or not at all.

        Raises:
            Conflict: PostgreSQL could not serialise this transaction with a concurrent one.
            Unavailable: The connection was lost; nothing was applied, unless the loss hit
                the COMMIT itself (the message says so: re-read before retrying).

        """
        with self.lock:
            self._start_transaction()
            self._in_transaction = True
            try:
                yield
                self._statement("COMMIT", (), None, during="committing")
            except BaseException as exc:
                self._roll_back()
                if _is_serialization_failure(exc):
                    raise Conflict("a concurrent change won; re-read and retry") from exc
                raise
            finally:
                self._in_transaction = False

    def _start_transaction(self) -> None:
        """BEGIN, once more on a fresh connection if the first one was found lost.

        Nothing of the transaction has run yet, so the retry cannot apply anything twice.
        """
        for attempt in (1, 2):
            connection = self.lock.connection()
            try:
                connection.execute(self._begin)
                return
            except Exception as exc:
                if not self._connections.lost(connection, exc):
                    raise
                self.lock.drop()
                if attempt == 2:
                    raise _unreachable(exc, "starting a transaction") from exc

    def _roll_back(self) -> None:
        if not self.lock.borrowed:
            return  # the connection was lost: the server rolled the transaction back
        connection = self.lock.connection()
        try:
            connection.execute("ROLLBACK")
        except Exception as exc:
            if not self._connections.lost(connection, exc):
                raise
            self.lock.drop()

    def _statement(
        self, sql: str, args: tuple[Any, ...], fetch: str | None, during: str = ""
    ) -> Any:
        """Run one statement; fetch "one", "all" or nothing.

        A lost connection is retried once on a fresh one only for a SELECT outside a
        transaction: it changes nothing, and nothing before it is lost with the connection.
        """
        if self.dialect == "postgres":
            sql = sql.replace("?", "%s")
        retry = not self._in_transaction and sql.lstrip().upper().startswith("SELECT")
        with self.lock:
            for attempt in (1, 2):
                connection = self.lock.connection()
                try:
                    cursor = connection.execute(sql, args)
                    if fetch == "one":
                        return cursor.fetchone()
                    return list(cursor.fetchall()) if fetch == "all" else None
                except Exception as exc:
                    if not self._connections.lost(connection, exc):
                        raise
                    self.lock.drop()
                    if not retry or attempt == 2:
                        raise _unreachable(exc, during) from exc
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _execute(self, sql: str, args: tuple[Any, ...] = ()) -> None:
        self._statement(sql, args, None)

    def _one(self, sql: str, *args: Any) -> Any:
        return self._statement(sql, args, "one")

    def _all(self, sql: str, *args: Any) -> list[Any]:
        return list(self._statement(sql, args, "all"))

    def _json(self, column: str, *keys: str, number: bool = False) -> tuple[str, str]:
        """An SQL expression reading `column`'s JSON at `keys`, and the path argument."""
        if self.dialect == "postgres":
            cast = "::double precision" if number else ""
            return f"(({column})::jsonb #>> ?){cast}", "{" + ",".join(keys) + "}"
        return f"json_extract({column}, ?)", "$." + ".".join(f'"{k}"' for k in keys)

    # --- models -----------------------------------------------------------------------------
    def model_id(self, name: str) -> int:
        """The id of model `name`; NotFound when it does not exist."""
        row = self._one("SELECT id FROM models WHERE name = ?", name)
        if row is None:
            raise NotFound(f"model {name!r} does not exist")
        return int(row["id"])

    def insert_model(self, name: str, description: str) -> None:
        """Create a model row (the caller checked it is new)."""
        self._execute(
            "INSERT INTO models (name, description, created_at) VALUES (?, ?, ?)",
            (name, description, time.time()),
        )

    def model(self, name: str) -> ModelInfo:
        """The model with its aliases."""
        row = self._one("SELECT * FROM models WHERE name = ?", name)
        if row is None:
            raise NotFound(f"model {name!r} does not exist")
        aliases = {
            r["name"]: r["version"]
            for r in self._all(
                "SELECT name, version FROM aliases WHERE model_id = ? ORDER BY name", row["id"]
            )
        }
        return ModelInfo(
            row["name"], row["description"], row["created_at"], row["latest_version"], aliases
        )

    def model_names(self, after: str, limit: int) -> list[str]:
        """Model names in order, after `after` (keyset pagination)."""
        rows = self._all(
            "SELECT name FROM models WHERE name > ? ORDER BY name LIMIT ?", after, limit
        )
        return [r["name"] for r in rows]

    # --- versions ---------------------------------------------------------------------------
    def next_version(self, model_id: int) -> int:
        """Reserve the next version number of a model."""
        self._execute(
            "UPDATE models SET latest_version = latest_version + 1 WHERE id = ?", (model_id,)
        )
        row = self._one("SELECT latest_version FROM models WHERE id = ?", model_id)
        assert row is not None
        return int(row["latest_version"])

    def insert_version(self, model_id: int, v: Version) -> None:
        """Store a version's metadata."""
        self._execute(
            "INSERT INTO versions (model_id, version, sha256, size_bytes, format, lineage, tags,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                model_id,
                v.version,
                v.sha256,
                v.size_bytes,
                v.format,
                json.dumps(asdict(v.lineage)),
                json.dumps(dict(v.tags)),
                v.created_at,
            ),
        )

    def version(self, model: str, model_id: int, number: int) -> Version:
        """One version with the aliases pointing at it."""
        row = self._one(
            "SELECT * FROM versions WHERE model_id = ? AND version = ?", model_id, number
        )
        if row is None:
            raise NotFound(f"model {model!r} has no version {number}")
        return self._version(model, model_id, row)

    def versions(
        self, model: str, model_id: int, before: int, limit: int, where: VersionFilter
    ) -> list[Version]:
        """Versions newest first, numbered below `before` (keyset pagination), filtered."""
        sql = ["SELECT * FROM versions WHERE model_id = ? AND version < ?"]
        args: list[Any] = [model_id, before]
        for key, value in where.tags.items():
            expression, path = self._json("tags", key)
            sql.append(f"AND {expression} = ?")
            args += [path, value]
        if where.metric:
            expression, path = self._json("lineage", "metrics", where.metric, number=True)
            sql.append(f"AND {expression} {'<=' if where.lower_is_better else '>='} ?")
            args += [path, where.min_metric]
        sql.append("ORDER BY version DESC LIMIT ?")
        rows = self._all(" ".join(sql), *args, limit)
        return [self._version(model, model_id, row) for row in rows]

    def set_tags(self, model_id: int, number: int, tags: dict[str, str]) -> None:
        """Replace a version's tags."""
        self._execute(
            "UPDATE versions SET tags = ? WHERE model_id = ? AND version = ?",
            (json.dumps(tags), model_id, number),
        )

    def _version(self, model: str, model_id: int, row: Any) -> Version:
        lineage = json.loads(row["lineage"])
        lineage["offsets"] = tuple(OffsetRange(**o) for o in lineage["offsets"])
        aliases = tuple(
            r["name"]
            for r in self._all(
                "SELECT name FROM aliases WHERE model_id = ? AND version = ? ORDER BY name",
                model_id,
                row["version"],
            )
        )
        return Version(
            model,
            row["version"],
            row["sha256"],
            row["size_bytes"],
            row["format"],
            Lineage(**lineage),
            json.loads(row["tags"]),
            row["created_at"],
            aliases,
        )

    # --- aliases ----------------------------------------------------------------------------
    def alias(self, model_id: int, name: str) -> tuple[int, int] | None:
        """(version, previous_version) of an alias, or None."""
        row = self._one(
            "SELECT version, previous_version FROM aliases WHERE model_id = ? AND name = ?",
            model_id,
            name,
        )
        return (row["version"], row["previous_version"]) if row else None

    def put_alias(self, model_id: int, name: str, version: int, previous: int) -> None:
        """Point an alias at a version (creating it) and mark the version as ever aliased."""
        self._execute(
            "INSERT INTO aliases (model_id, name, version, previous_version) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (model_id, name) DO UPDATE SET version = excluded.version,"
            " previous_version = excluded.previous_version",
            (model_id, name, version, previous),
        )
        self._execute(
            "UPDATE versions SET ever_aliased = 1 WHERE model_id = ? AND version = ?",
            (model_id, version),
        )

    def drop_alias(self, model_id: int, name: str) -> None:
        """Remove an alias."""
        self._execute("DELETE FROM aliases WHERE model_id = ? AND name = ?", (model_id, name))

    # --- audit and events -------------------------------------------------------------------
    def add_audit(
        self,
        model_id: int,
        model: str,
        action: str,
        alias: str,
        from_version: int,
        to_version: int,
        actor: str,
        reason: str,
    ) -> Audit:
        """Append an audit record."""
        now = time.time()
        row = self._one(
            "INSERT INTO audit (model_id, action, alias, from_version, to_version, actor, reason,"
            " time) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            model_id,
            action,
            alias,
            from_version,
            to_version,
            actor,
            reason,
            now,
        )
        return Audit(
            int(row["id"]),
            model,
            action,
            alias,
            from_version,
            to_version,
            actor,
            reason,
            now,
        )

    def audit(self, model_id: int, model: str, limit: int) -> list[Audit]:
        """The newest audit records of a model, newest first."""
        rows = self._all(
            "SELECT * FROM audit WHERE model_id = ? ORDER BY id DESC LIMIT ?", model_id, limit
        )
        return [
            Audit(
                r["id"],
                model,
                r["action"],
                r["alias"],
                r["from_version"],
                r["to_version"],
                r["actor"],
                r["reason"],
                r["time"],
            )
            for r in rows
        ]

    def alias_moves(self, model_id: int, alias: str) -> list[tuple[str, int, int]]:
        """(action, from_version, to_version) of every move of one alias, oldest first."""
        rows = self._all(
            "SELECT action, from_version, to_version FROM audit WHERE model_id = ? AND alias = ?"
            " ORDER BY id",
            model_id,
            alias,
        )
        return [(r["action"], r["from_version"], r["to_version"]) for r in rows]

    def add_event(self, event: Event) -> None:
        """Append to the outbox (sequence assigned by the database)."""
        fields = asdict(event)
        del fields["sequence"]
        fields["time"] = fields["time"] or time.time()
        self._execute(
            f"INSERT INTO events ({', '.join(fields)}) VALUES ({', '.join('?' * len(fields))})",
            tuple(fields.values()),
        )

    def events(
        self, after: int, limit: int, model: str = "", unpublished: bool = False
    ) -> list[Event]:
        """Events with a sequence above `after`, in order."""
        sql = "SELECT * FROM events WHERE sequence > ?"
        args: list[Any] = [after]
        if model:
            sql += " AND model = ?"
            args.append(model)
        if unpublished:
            sql += " AND published = 0"
        rows = self._all(sql + " ORDER BY sequence LIMIT ?", *args, limit)
        # sqlite3.Row iterates over values (unlike a dict row), so keys() is needed here.
        return [
            Event(**{k: r[k] for k in r.keys() if k != "published"})  # noqa: SIM118
            for r in rows
        ]

    def last_sequence(self) -> int:
        """The highest event sequence, 0 for none."""
        row = self._one("SELECT MAX(sequence) AS s FROM events")
        return int(row["s"] or 0) if row else 0

    def mark_published(self, up_to: int) -> None:
        """Record that every event up to `up_to` reached Kafka."""
        self._execute(
            "UPDATE events SET published = 1 WHERE published = 0 AND sequence <= ?", (up_to,)
        )

    # --- retention --------------------------------------------------------------------------
    def collectable(self, model_id: int, keep_last: int) -> list[tuple[int, str]]:
        """(version, sha256) of versions beyond the newest `keep_last` that never held an alias.

        Oldest first.
        """
        rows = self._all(
            "SELECT version, sha256 FROM versions WHERE model_id = ? AND ever_aliased = 0"
            " AND version <= (SELECT latest_version FROM models WHERE id = ?) - ?"
            " ORDER BY version",
            model_id,
            model_id,
            keep_last,
        )
        return [(r["version"], r["sha256"]) for r in rows]

    def delete_version(self, model_id: int, number: int) -> None:
        """Forget a version's metadata."""
        self._execute("DELETE FROM versions WHERE model_id = ? AND version = ?", (model_id, number))

    def sha_in_use(self, sha256: str) -> bool:
        """True while any version still refers to this artifact."""
        return self._one("SELECT 1 FROM versions WHERE sha256 = ? LIMIT 1", sha256) is not None

    def all_model_ids(self) -> list[tuple[int, str]]:
        """(id, name) of every model."""
        return [(r["id"], r["name"]) for r in self._all("SELECT id, name FROM models")]


def _unreachable(error: BaseException, during: str) -> Unavailable:
    if during == "committing":
        return Unavailable(
            "the connection to the registry database was lost while committing: the change "
            f"may or may not have been applied; re-read before retrying ({error})"
        )
    return Unavailable(f"the registry database is unreachable ({error}): retry later")


def _is_serialization_failure(exc: BaseException) -> bool:
    return getattr(exc, "sqlstate", None) == "40001"
