"""The registry's SQL schema, as numbered migrations applied in order at open.

`PRAGMA user_version` records how many migrations a database has; a new migration is appended
to MIGRATIONS, never edited in place once released.
"""

from __future__ import annotations

import sqlite3

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE models (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        description TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        latest_version INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE versions (
        model_id INTEGER NOT NULL REFERENCES models(id),
        version INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        format TEXT NOT NULL,
        lineage TEXT NOT NULL,
        tags TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        ever_aliased INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (model_id, version)
    ) WITHOUT ROWID;
    CREATE INDEX versions_by_sha ON versions (sha256);
    CREATE TABLE aliases (
        model_id INTEGER NOT NULL REFERENCES models(id),
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        previous_version INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (model_id, name)
    ) WITHOUT ROWID;
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        model_id INTEGER NOT NULL REFERENCES models(id),
        action TEXT NOT NULL,
        alias TEXT NOT NULL,
        from_version INTEGER NOT NULL,
        to_version INTEGER NOT NULL,
        actor TEXT NOT NULL,
        reason TEXT NOT NULL,
        time REAL NOT NULL
    );
    CREATE INDEX audit_by_model ON audit (model_id, id);
    -- Transactional outbox: written in the same transaction as the change it announces.
    CREATE TABLE events (
        sequence INTEGER PRIMARY KEY AUTOINCREMENT,
        type TEXT NOT NULL,
        model TEXT NOT NULL,
        version INTEGER NOT NULL DEFAULT 0,
        alias TEXT NOT NULL DEFAULT '',
        previous_version INTEGER NOT NULL DEFAULT 0,
        actor TEXT NOT NULL DEFAULT '',
        reason TEXT NOT NULL DEFAULT '',
        time REAL NOT NULL,
        sha256 TEXT NOT NULL DEFAULT '',
        published INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX events_unpublished ON events (published, sequence);
    """,
)


def migrate(connection: sqlite3.Connection) -> int:
    """Apply the migrations this database lacks; returns the schema version now."""
    (current,) = connection.execute("PRAGMA user_version").fetchone()
    for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
        connection.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
    return len(MIGRATIONS)
