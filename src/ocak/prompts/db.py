"""The prompts file: SQLite in WAL mode, a versioned schema migrated forward at open; or,
with ``database_url``, the same tables in PostgreSQL.

The same settings as ``ocak.db`` (``ocak.store.db``): WAL (readers never wait for a
writer), ``synchronous=NORMAL``, foreign keys on (deleting a prompt deletes its versions
and labels), ``busy_timeout`` so writers of several processes queue.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from ocak.errors import OcakError
from ocak.postgres import Connection, connect, migrate, to_postgres
from ocak.sqlite import open_migrated

# Each entry moves the schema from version i to i + 1. Never edit a released entry.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE prompts (
            id TEXT PRIMARY KEY, description TEXT, created_at REAL NOT NULL)""",
        """CREATE TABLE versions (
            prompt TEXT NOT NULL REFERENCES prompts(id) ON DELETE CASCADE,
            version INTEGER NOT NULL CHECK (version >= 1),
            messages TEXT NOT NULL, variables TEXT NOT NULL, model TEXT, params TEXT NOT NULL,
            note TEXT, sha256 TEXT NOT NULL, created_at REAL NOT NULL,
            PRIMARY KEY (prompt, version))""",
        """CREATE TABLE labels (
            prompt TEXT NOT NULL, label TEXT NOT NULL, version INTEGER NOT NULL,
            updated_at REAL NOT NULL, PRIMARY KEY (prompt, label),
            FOREIGN KEY (prompt, version) REFERENCES versions(prompt, version)
                ON DELETE CASCADE)""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


class PromptStoreError(OcakError):
    """The prompts file cannot be opened or used."""


def open_prompts_db(path: Path) -> sqlite3.Connection:
    """The file in WAL mode with foreign keys on, its schema brought up to date."""
    return open_migrated(path, MIGRATIONS, PromptStoreError, "the prompts file")


def open_prompts_pg(url: str) -> Any:
    """The registry's tables in PostgreSQL (``database_url``), shared by several ocak
    processes: a connection that answers as ``sqlite3``'s does (``ocak.postgres``)."""
    conn = connect(url, PromptStoreError, "the prompt registry")
    try:
        steps = [[to_postgres(statement) for statement in m] for m in MIGRATIONS]
        migrate(conn, steps, "ocak_prompts_schema", PromptStoreError)
    except BaseException:
        conn.close()
        raise
    return Connection(conn)
