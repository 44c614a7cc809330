"""The SQLite connection: WAL mode, a versioned schema, migrations applied at open.

``synchronous=NORMAL`` in WAL mode: a commit returns once its pages are written
to the WAL file (no fsync per commit), so a committed row survives the process
being killed (``kill -9``); only a power cut can lose the last commits. That
keeps a usage record's commit in the tens of microseconds, on the request path.

One connection per process, shared by threads under a lock (the HTTP event
loop, gRPC threads); other processes (``ocak keys``, ``ocak usage``) open their
own and SQLite serialises writers (``busy_timeout``).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

from ocak.errors import OcakError

DB_NAME = "ocak.db"

# Each entry moves the schema from version i to i + 1. Never edit a released
# entry: add a new one. ``tests/store/test_db.py`` upgrades a version-1 file.
MIGRATIONS: tuple[str, ...] = (
    # 1: keys (hash only) and one usage row per request.
    """
    CREATE TABLE keys (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        prefix TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        models TEXT,
        rpm INTEGER,
        tpm INTEGER,
        budget_tokens INTEGER,
        created_at REAL NOT NULL,
        revoked_at REAL
    );
    CREATE TABLE usage (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        request_id TEXT NOT NULL,
        key_name TEXT,
        model TEXT,
        backend TEXT,
        prompt_tokens INTEGER NOT NULL DEFAULT 0,
        completion_tokens INTEGER NOT NULL DEFAULT 0,
        ttft_ms REAL,
        total_ms REAL NOT NULL,
        status TEXT NOT NULL
    );
    """,
    # 2: locality (keys restricted to local backends; where a request ran),
    # budget periods, the key id on usage rows (names may be reused after a
    # revoke), the HTTP outcome, and the indexes summaries and budgets read.
    """
    ALTER TABLE keys ADD COLUMN locality TEXT;
    ALTER TABLE keys ADD COLUMN budget_period REAL;
    CREATE UNIQUE INDEX keys_active_name ON keys(name) WHERE revoked_at IS NULL;
    ALTER TABLE usage ADD COLUMN key_id INTEGER;
    ALTER TABLE usage ADD COLUMN locality TEXT;
    ALTER TABLE usage ADD COLUMN stream INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE usage ADD COLUMN http_status INTEGER;
    ALTER TABLE usage ADD COLUMN error_code TEXT;
    ALTER TABLE usage ADD COLUMN finish_reason TEXT;
    CREATE INDEX usage_ts ON usage(ts);
    CREATE INDEX usage_key_ts ON usage(key_id, ts);
    """,
    # 3: the administrator scope (routes that change the machine); existing keys are not
    # administrators, so they keep exactly what they had.
    """
    ALTER TABLE keys ADD COLUMN admin INTEGER NOT NULL DEFAULT 0;
    """,
    # 4: the registry prompt version a request was rendered from; and, only with the
    # operator's consent (store_content), a chat request's messages and its answer beside
    # its usage row (JSON, secrets redacted), deleted once content_retention has passed.
    """
    ALTER TABLE usage ADD COLUMN prompt TEXT;
    CREATE TABLE usage_content (
        usage_id INTEGER PRIMARY KEY REFERENCES usage(id) ON DELETE CASCADE,
        ts REAL NOT NULL,
        messages TEXT NOT NULL,
        params TEXT NOT NULL,
        answer TEXT NOT NULL
    );
    CREATE INDEX usage_content_ts ON usage_content(ts);
    """,
    # 5: per-key rate windows shared by the processes of one store (server/limits.py's
    # SharedLimiter, used with PostgreSQL): one row per admitted request, and one per
    # request's tokens, kept for the last minute.
    """
    CREATE TABLE rate_events (
        key_id INTEGER NOT NULL,
        ts REAL NOT NULL,
        tokens INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX rate_events_key_ts ON rate_events(key_id, ts);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


class StoreError(OcakError):
    """The database cannot be opened or is newer than this ocak."""


class ConstraintViolation(StoreError):
    """A write broke a constraint (a unique name taken): on either engine."""


def database_path(data_dir: Path) -> Path:
    return data_dir / DB_NAME


class Executor(Protocol):
    """A connection inside a transaction: SQLite's, or the PostgreSQL store's wrapper."""

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Any: ...


class Store(Protocol):
    """What the keys and usage code needs of ``ocak.db``: ``Database`` (SQLite, the
    embedded default) or ``PostgresDatabase`` (``database_url``), one SQL for both."""

    dialect: str
    path: Path

    def execute(self, sql: str, params: Sequence[Any] = ...) -> list[tuple[Any, ...]]: ...
    def insert(self, sql: str, params: Sequence[Any] = ...) -> int: ...
    def transaction(self, lock: int | None = ...) -> AbstractContextManager[Executor]: ...
    def data_version(self) -> int: ...
    def schema_version(self) -> int: ...
    def checkpoint_in_background(self, interval: float = ...) -> None: ...
    def close(self) -> None: ...


class Database:
    """A SQLite connection usable from several threads, one statement at a time."""

    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self.lock = threading.Lock()
        self._checkpointer: threading.Thread | None = None
        self._stop = threading.Event()

    def checkpoint_in_background(self, interval: float = 1.0) -> None:
        """Move WAL checkpoints off the request path.

        SQLite checkpoints when a commit grows the WAL past 1,000 pages, and that
        commit pays for copying pages and an fsync (milliseconds). A server turns
        that off and checkpoints here, from its own connection, every ``interval``.
        """
        if self._checkpointer is not None:
            return
        with self.lock:
            self.conn.execute("PRAGMA wal_autocheckpoint=0")
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=5000")

        def run() -> None:
            try:
                while not self._stop.wait(interval):
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                conn.close()

        self._checkpointer = threading.Thread(target=run, name="ocak-wal-checkpoint", daemon=True)
        self._checkpointer.start()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement (committed at once: autocommit) and return its rows."""
        with self.lock:
            return self.conn.execute(sql, params).fetchall()

    def insert(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self.lock:
            try:
                cur = self.conn.execute(sql, params)
            except sqlite3.IntegrityError as exc:
                raise ConstraintViolation(str(exc)) from exc
            return int(cur.lastrowid or 0)

    @contextmanager
    def transaction(self, lock: int | None = None) -> Iterator[sqlite3.Connection]:
        """Several statements committed together (``BEGIN IMMEDIATE``: writers queue here,
        so ``lock``, which PostgreSQL needs to serialise one key's or session's writers
        across processes, is already held by every SQLite transaction)."""
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def data_version(self) -> int:
        """Changes whenever *another* connection commits (a key created by ``ocak keys``)."""
        with self.lock:
            row = self.conn.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    def schema_version(self) -> int:
        with self.lock:
            return _user_version(self.conn)

    def close(self) -> None:
        """Checkpoint the WAL into the main file and close."""
        if self._checkpointer is not None:
            self._stop.set()
            self._checkpointer.join()
            self._checkpointer = None
        with self.lock:
            # Another process may hold a reader: then the WAL stays, nothing is lost.
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self.conn.close()


def _user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(
    conn: sqlite3.Connection,
    path: Path,
    target: int | None = None,
    migrations: Sequence[str] = MIGRATIONS,
) -> int:
    """Apply the migrations the file lacks, each in its own transaction."""
    known = len(migrations)
    target = known if target is None else target
    version = _user_version(conn)
    if version > known:
        raise StoreError(
            f"{path} has schema version {version}, newer than this ocak knows "
            f"({known}); upgrade ocak or point OCAK_DATA_DIR elsewhere"
        )
    while version < target:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated while we waited for the lock.
            if _user_version(conn) != version:
                conn.execute("ROLLBACK")
                version = _user_version(conn)
                continue
            for statement in _statements(migrations[version]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        version += 1
    return version


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def open_database(
    path: Path,
    *,
    migrate_to: int | None = None,
    migrations: Sequence[str] = MIGRATIONS,
    what: str = "the database",
) -> Database:
    """Open (creating) the SQLite file at ``path`` and bring its schema up to date.

    One routine for every database ocak keeps (``ocak.db``, ``characters.db``): WAL,
    ``synchronous=NORMAL``, foreign keys, and ``migrations`` applied forward.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"cannot open {what} {path}: {exc}") from exc
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA journal_size_limit=8388608")  # trim the WAL file after checkpoints
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA foreign_keys=ON")
        migrate(conn, path, migrate_to, migrations)
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"cannot use {what} {path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return Database(conn, path)
