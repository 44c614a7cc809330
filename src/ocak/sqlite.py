"""Opening a SQLite file the way every ocak store does: WAL (readers never wait for a
writer), ``synchronous=NORMAL``, ``busy_timeout`` so writers of several processes queue,
foreign keys on, and a versioned schema migrated forward at open (``PRAGMA user_version``,
each migration in its own transaction, safe when two processes open the file at once).

Below every layer, so the parts that keep their own files (knowledge bases, prompts) share
it; each passes the error class its callers know.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from ocak.errors import OcakError

Migrations = Sequence[Sequence[str]]  # entry i moves the schema from version i to i + 1


def open_migrated(
    path: Path, migrations: Migrations, error: type[OcakError], what: str
) -> sqlite3.Connection:
    """The file in WAL mode with foreign keys on, its schema brought up to date; a file
    that cannot be opened or used is ``error`` naming ``what`` ("the prompts file")."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
    except (OSError, sqlite3.Error) as exc:
        raise error(f"cannot open {what} {path}: {exc}") from exc
    try:
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=5000"):
            conn.execute(f"PRAGMA {pragma}")
        conn.execute("PRAGMA foreign_keys=ON")
        _migrate(conn, path, migrations, error)
    except sqlite3.Error as exc:
        conn.close()
        raise error(f"cannot use {what} {path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(
    conn: sqlite3.Connection, path: Path, migrations: Migrations, error: type[OcakError]
) -> None:
    """Apply the migrations the file lacks, each in its own transaction."""
    latest = len(migrations)
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > latest:
        raise error(
            f"{path} has schema version {version}, newer than this ocak knows "
            f"({latest}); upgrade ocak"
        )
    while version < latest:
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if current == version:  # else another process migrated while we waited
                for statement in migrations[version]:
                    conn.execute(statement)
                current = version + 1
                conn.execute(f"PRAGMA user_version = {current}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        version = current
