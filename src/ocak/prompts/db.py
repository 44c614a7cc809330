"""The prompts file: SQLite in WAL mode, a versioned schema migrated forward at open.

The same settings as ``ocak.db`` (``ocak.store.db``): WAL (readers never wait for a
writer), ``synchronous=NORMAL``, foreign keys on (deleting a prompt deletes its versions
and labels), ``busy_timeout`` so writers of several processes queue.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ocak.errors import OcakError

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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
    except (OSError, sqlite3.Error) as exc:
        raise PromptStoreError(f"cannot open the prompts file {path}: {exc}") from exc
    try:
        for pragma in (
            "journal_mode=WAL",
            "synchronous=NORMAL",
            "busy_timeout=5000",
            "foreign_keys=ON",
        ):
            conn.execute(f"PRAGMA {pragma}")
        _migrate(conn, path)
    except sqlite3.Error as exc:
        conn.close()
        raise PromptStoreError(f"cannot use the prompts file {path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Apply the migrations the file lacks, each in its own transaction."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise PromptStoreError(
            f"{path} has schema version {version}, newer than this ocak "
            f"knows ({SCHEMA_VERSION}); upgrade ocak"
        )
    while version < SCHEMA_VERSION:
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if current == version:  # else another process migrated while we waited
                for statement in MIGRATIONS[version]:
                    conn.execute(statement)
                current = version + 1
                conn.execute(f"PRAGMA user_version = {current}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        version = current
