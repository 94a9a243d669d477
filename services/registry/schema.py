"""The registry's SQL schema as numbered migrations, for SQLite and PostgreSQL alike.

A migration is appended, never edited once released. `schema_migrations` records which ran;
each runs in its own transaction together with its record.
"""

from __future__ import annotations

from typing import Any

# One schema written once; the few type words that differ are filled in per dialect.
_V1 = """
CREATE TABLE models (
    id {serial} PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    created_at {real} NOT NULL,
    latest_version BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE versions (
    model_id BIGINT NOT NULL REFERENCES models(id),
    version BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    format TEXT NOT NULL,
    lineage TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '{{}}',
    created_at {real} NOT NULL,
    ever_aliased INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (model_id, version)
){without_rowid};
CREATE INDEX versions_by_sha ON versions (sha256);
CREATE TABLE aliases (
    model_id BIGINT NOT NULL REFERENCES models(id),
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    previous_version BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (model_id, name)
){without_rowid};
CREATE TABLE audit (
    id {serial} PRIMARY KEY,
    model_id BIGINT NOT NULL REFERENCES models(id),
    action TEXT NOT NULL,
    alias TEXT NOT NULL,
    from_version BIGINT NOT NULL,
    to_version BIGINT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    time {real} NOT NULL
);
CREATE INDEX audit_by_model ON audit (model_id, id);
CREATE TABLE events (
    sequence {serial} PRIMARY KEY,
    type TEXT NOT NULL,
    model TEXT NOT NULL,
    version BIGINT NOT NULL DEFAULT 0,
    alias TEXT NOT NULL DEFAULT '',
    previous_version BIGINT NOT NULL DEFAULT 0,
    actor TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '',
    time {real} NOT NULL,
    sha256 TEXT NOT NULL DEFAULT '',
    published INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX events_unpublished ON events (published, sequence)
"""

TYPES = {
    "sqlite": {"serial": "INTEGER", "real": "REAL", "without_rowid": " WITHOUT ROWID"},
    # BIGSERIAL: sequences only grow, which the events outbox relies on.
    "postgres": {"serial": "BIGSERIAL", "real": "DOUBLE PRECISION", "without_rowid": ""},
}

MIGRATIONS: tuple[str, ...] = (_V1,)


def statements(dialect: str, number: int) -> list[str]:
    """The statements of migration `number` (1-based) in a dialect."""
    script = MIGRATIONS[number - 1].format(**TYPES[dialect])
    return [s.strip() for s in script.split(";") if s.strip()]


def pending(applied: set[int]) -> list[int]:
    """Migration numbers not applied yet, in order."""
    return [n for n in range(1, len(MIGRATIONS) + 1) if n not in applied]


def migrate(connection: Any, dialect: str, begin: str, placeholder: str) -> int:
    """Apply missing migrations; returns the schema version now."""
    connection.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)")
    applied = {
        row["version"] for row in connection.execute("SELECT version FROM schema_migrations")
    }
    for number in pending(applied):
        connection.execute(begin)
        try:
            for statement in statements(dialect, number):
                connection.execute(statement)
            connection.execute(f"INSERT INTO schema_migrations VALUES ({placeholder})", (number,))
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
    return len(MIGRATIONS)
