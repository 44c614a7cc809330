"""The knowledge file: SQLite in WAL mode, a versioned schema migrated forward at open.

The same settings as ``ocak.db`` (``ocak.store.db``): ``synchronous=NORMAL`` (a commit
survives the process being killed), foreign keys on (deleting a knowledge base or a
document deletes its chunks), ``busy_timeout`` so writers of several processes queue.
FTS5 indexes chunk text as external content, kept in step by triggers.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ocak.errors import OcakError
from ocak.sqlite import open_migrated

# Each entry moves the schema from version i to i + 1, one statement per string.
# Never edit a released entry: add a new one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE kbs (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            model TEXT NOT NULL,
            dimensions INTEGER NOT NULL,
            created_at REAL NOT NULL,
            generation INTEGER NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE documents (
            id INTEGER PRIMARY KEY,
            kb_id INTEGER NOT NULL REFERENCES kbs(id) ON DELETE CASCADE,
            source TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            size INTEGER NOT NULL,
            added_at REAL NOT NULL,
            UNIQUE (kb_id, source)
        )""",
        """CREATE TABLE chunks (
            id INTEGER PRIMARY KEY,
            document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
            ordinal INTEGER NOT NULL,
            heading TEXT NOT NULL,
            text TEXT NOT NULL,
            text_sha256 TEXT NOT NULL,
            char_start INTEGER NOT NULL,
            char_end INTEGER NOT NULL,
            page INTEGER,
            vector BLOB NOT NULL
        )""",
        "CREATE INDEX chunks_document ON chunks(document_id, ordinal)",
        """CREATE VIRTUAL TABLE chunks_fts USING fts5(
            heading, text, content='chunks', content_rowid='id', tokenize='porter unicode61'
        )""",
        """CREATE TRIGGER chunks_fts_insert AFTER INSERT ON chunks BEGIN
            INSERT INTO chunks_fts(rowid, heading, text) VALUES (new.id, new.heading, new.text);
        END""",
        """CREATE TRIGGER chunks_fts_delete AFTER DELETE ON chunks BEGIN
            INSERT INTO chunks_fts(chunks_fts, rowid, heading, text)
            VALUES ('delete', old.id, old.heading, old.text);
        END""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


class KnowledgeStoreError(OcakError):
    """The knowledge file cannot be opened or used."""


class KnowledgeDb:
    """One connection shared by threads under a lock, one statement or transaction at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.conn = open_knowledge_db(path)

    def read(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self.lock:
            try:
                return self.conn.execute(sql, tuple(params)).fetchall()
            except sqlite3.Error as exc:
                raise KnowledgeStoreError(f"cannot read {self.path}: {exc}") from exc

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """Several statements committed together (``BEGIN IMMEDIATE``: writers queue here)."""
        with self.lock:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise KnowledgeStoreError(f"cannot write {self.path}: {exc}") from exc
            try:
                yield self.conn
                self.conn.execute("COMMIT")
            except BaseException as exc:
                if self.conn.in_transaction:  # a failed COMMIT may have rolled back already
                    self.conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise KnowledgeStoreError(f"cannot write {self.path}: {exc}") from exc
                raise

    def close(self) -> None:
        """Checkpoint the WAL into the main file and close."""
        with self.lock:
            # Another process may hold a reader: then the WAL stays, nothing is lost.
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self.conn.close()


def open_knowledge_db(path: Path) -> sqlite3.Connection:
    """The file in WAL mode with foreign keys on, its schema brought up to date."""
    return open_migrated(path, MIGRATIONS, KnowledgeStoreError, "the knowledge file")
