"""PostgreSQL as ocak's store (``database_url``): the same tables as ``ocak.db``, shared
by several ocak processes.

``PostgresDatabase`` answers what ``Database`` answers (``execute``, ``insert``,
``transaction``, ``data_version``, ``close``), so the key and usage code above it is one
code for both engines: its SQL is written in the subset the two share, with ``?``
placeholders (``ocak.postgres`` turns them into psycopg's). The schema has one history:
the migrations of ``db.MIGRATIONS``, translated into PostgreSQL's types; ``ocak_schema``
holds the version, as SQLite's ``user_version`` does.

``data_version`` is what a server polls to see keys another process created or revoked:
a digest of the keys table (count, newest id, revocations), one indexed query.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ocak.postgres import LOCK_ID, Connection, Cursor, connect, migrate, split, to_postgres
from ocak.store.db import MIGRATIONS, ConstraintViolation, StoreError

PG_MIGRATIONS: tuple[str, ...] = tuple(to_postgres(m) for m in MIGRATIONS)


class PostgresDatabase:
    """One psycopg connection per process, shared by threads one statement at a time."""

    dialect = "postgres"

    def __init__(self, conn: Any, url: str, schema_table: str = "ocak_schema") -> None:
        self.conn = Connection(conn)
        self.url = url
        self.schema_table = schema_table
        self.path = Path("postgres")  # no file: what SQLite's path names, for messages
        self.lock = threading.Lock()

    def checkpoint_in_background(self, interval: float = 1.0) -> None:
        """Nothing to do: PostgreSQL checkpoints by itself."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.lock:
            return self._run(sql, params).fetchall()

    def insert(self, sql: str, params: Sequence[Any] = ()) -> int:
        """An INSERT; the new row's id (``RETURNING id``, as SQLite's ``lastrowid``)."""
        with self.lock:
            row = self._run(sql + " RETURNING id", params).fetchone()
            return int(row[0]) if row else 0

    def _run(self, sql: str, params: Sequence[Any]) -> Cursor:
        try:
            return self.conn.execute(sql, params)
        except sqlite3.IntegrityError as exc:
            raise ConstraintViolation(str(exc)) from exc
        except sqlite3.Error as exc:
            raise StoreError(f"PostgreSQL: {exc}") from exc

    @contextmanager
    def transaction(self, lock: int | None = None) -> Iterator[Connection]:
        """Statements committed together; with ``lock``, under that advisory lock (held by
        one process at a time until the commit: a key's rate window, checked and counted)."""
        with self.lock, self.conn.raw.transaction():
            if lock is not None:
                self.conn.execute("SELECT pg_advisory_xact_lock(?, ?)", (LOCK_ID, lock))
            yield self.conn

    def data_version(self) -> int:
        """Changes when a key is created or revoked, by this process or another."""
        rows = self.execute(
            "SELECT COUNT(*), COALESCE(MAX(id), 0), COALESCE(SUM(revoked_at), 0) FROM keys"
        )
        return hash(tuple(rows[0]))

    def schema_version(self) -> int:
        return int(self.execute(f"SELECT version FROM {self.schema_table}")[0][0])

    def close(self) -> None:
        with self.lock:
            self.conn.close()


def open_postgres(
    url: str,
    migrations: Sequence[str] = PG_MIGRATIONS,
    *,
    schema_table: str = "ocak_schema",
    what: str = "keys and usage records",
) -> PostgresDatabase:
    """Connect to ``url`` (``postgresql://user:password@host:port/db``) and bring the
    schema up to date: ``migrations``, their version kept in ``schema_table`` (one per
    store: the characters' tables live beside the keys' in the same database)."""
    conn = connect(url, StoreError, what)
    try:
        migrate(conn, [split(m) for m in migrations], schema_table, StoreError)
    except BaseException:
        conn.close()
        raise
    return PostgresDatabase(conn, url, schema_table)
