"""Fine-tuning files and jobs in one SQLite file (``tuning.db``), in OpenAI's terms.

A file is an uploaded training set (its bytes beside the database, checked when
uploaded); a job trains one adapter from a file and moves through OpenAI's statuses:
``validating_files`` -> ``queued`` -> ``running`` -> ``succeeded`` | ``failed`` |
``cancelled``. Its events (messages and per-step metrics) and checkpoints are rows of
their own, so a client polling ``/events`` reads what was recorded, newest first.

The database says what happened; the runner (``serving/tuning.py``) does it.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ocak.errors import NotFound, OcakError
from ocak.sqlite import open_migrated

Status = Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]
ACTIVE: tuple[Status, ...] = ("validating_files", "queued", "running")
FINISHED: tuple[Status, ...] = ("succeeded", "failed", "cancelled")

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE files (
            id TEXT PRIMARY KEY, filename TEXT NOT NULL, purpose TEXT NOT NULL,
            bytes INTEGER NOT NULL, created_at REAL NOT NULL, examples INTEGER NOT NULL,
            tokens INTEGER)""",
        """CREATE TABLE jobs (
            id TEXT PRIMARY KEY, created_at REAL NOT NULL, model TEXT NOT NULL,
            training_file TEXT NOT NULL, validation_file TEXT, suffix TEXT,
            seed INTEGER NOT NULL, hyperparameters TEXT NOT NULL, method TEXT NOT NULL,
            status TEXT NOT NULL, fine_tuned_model TEXT, adapter TEXT, started_at REAL,
            finished_at REAL, trained_tokens INTEGER, error TEXT, metadata TEXT,
            eval_suite TEXT, eval_result TEXT)""",
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
            job TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            created_at REAL NOT NULL, level TEXT NOT NULL, type TEXT NOT NULL,
            message TEXT NOT NULL, data TEXT)""",
        "CREATE INDEX events_job ON events(job, seq)",
        """CREATE TABLE checkpoints (
            id TEXT PRIMARY KEY, job TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            created_at REAL NOT NULL, step INTEGER NOT NULL, model TEXT NOT NULL,
            metrics TEXT NOT NULL)""",
    ),
    ("ALTER TABLE jobs ADD COLUMN merged TEXT",),  # the CTranslate2 model, when asked
)


class TuningStoreError(OcakError):
    """The tuning database cannot be opened or used."""


class FileNotFound(NotFound):
    code = "file_not_found"


class JobNotFound(NotFound):
    code = "fine_tuning_job_not_found"


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


@dataclass(frozen=True, slots=True)
class FileInfo:
    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: float
    examples: int
    tokens: int | None = None


@dataclass(slots=True)
class Job:
    id: str
    created_at: float
    model: str
    training_file: str
    validation_file: str | None
    suffix: str | None
    seed: int
    hyperparameters: dict[str, Any]  # as asked (numbers or "auto"), then as resolved
    method: str
    status: Status
    fine_tuned_model: str | None = None
    adapter: str | None = None  # the model store's name of the adapter
    started_at: float | None = None
    finished_at: float | None = None
    trained_tokens: int | None = None
    error: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    eval_suite: str | None = None
    eval_result: dict[str, Any] | None = None
    merged: str | None = None  # the model store's name of the merged CTranslate2 model


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    job: str
    created_at: float
    level: str
    type: str
    message: str
    data: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Checkpoint:
    id: str
    job: str
    created_at: float
    step: int
    model: str
    metrics: dict[str, Any] = field(default_factory=dict)


_JOB_FIELDS = (
    "id", "created_at", "model", "training_file", "validation_file", "suffix", "seed",
    "hyperparameters", "method", "status", "fine_tuned_model", "adapter", "started_at",
    "finished_at", "trained_tokens", "error", "metadata", "eval_suite", "eval_result", "merged",
)  # fmt: skip
_JOB_COLUMNS = ", ".join(_JOB_FIELDS)
_JSON_COLUMNS = {"hyperparameters", "error", "metadata", "eval_result"}


def _job(row: tuple[Any, ...]) -> Job:
    values = {
        n: (json.loads(v) if n in _JSON_COLUMNS and v is not None else v)
        for n, v in zip(_JOB_FIELDS, row, strict=True)
    }
    return Job(**values)


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


class TuningStore:
    """Files and jobs of one ``tuning.db``; the file bytes under ``files/`` beside it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.files_dir = path.parent / "tuning-files"
        self._lock = threading.Lock()
        self._conn = open_migrated(path, MIGRATIONS, TuningStoreError, "the tuning database")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise TuningStoreError(f"cannot use {self.path}: {exc}") from exc

    # -- files -------------------------------------------------------------------------

    def file_path(self, file_id: str) -> Path:
        return self.files_dir / f"{file_id}.jsonl"

    def add_file(self, info: FileInfo, data: bytes) -> FileInfo:
        """Keep ``data`` (written whole, then renamed) and its row."""
        self.files_dir.mkdir(parents=True, exist_ok=True)
        final = self.file_path(info.id)
        part = final.with_suffix(".part")
        part.write_bytes(data)
        part.replace(final)
        with self._db() as db:
            db.execute(
                "INSERT INTO files (id, filename, purpose, bytes, created_at, examples, tokens)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (info.id, info.filename, info.purpose, info.bytes, info.created_at,
                 info.examples, info.tokens),
            )  # fmt: skip
        return info

    def file(self, file_id: str) -> FileInfo:
        with self._db() as db:
            row = db.execute(
                "SELECT id, filename, purpose, bytes, created_at, examples, tokens FROM files"
                " WHERE id = ?",
                (file_id,),
            ).fetchone()
        if row is None:
            raise FileNotFound(f"No such file: '{file_id}'.", param="file_id")
        return FileInfo(*row)

    def files(self, purpose: str | None = None) -> list[FileInfo]:
        with self._db() as db:
            rows = db.execute(
                "SELECT id, filename, purpose, bytes, created_at, examples, tokens FROM files"
                " WHERE ? IS NULL OR purpose = ? ORDER BY created_at DESC, id",
                (purpose, purpose),
            ).fetchall()
        return [FileInfo(*r) for r in rows]

    def delete_file(self, file_id: str) -> None:
        self.file(file_id)
        with self._db() as db:
            db.execute("DELETE FROM files WHERE id = ?", (file_id,))
        self.file_path(file_id).unlink(missing_ok=True)

    # -- jobs --------------------------------------------------------------------------

    def add_job(self, job: Job) -> Job:
        stored = [
            _dumps(getattr(job, n)) if n in _JSON_COLUMNS else getattr(job, n) for n in _JOB_FIELDS
        ]
        with self._db() as db:
            db.execute(
                f"INSERT INTO jobs ({_JOB_COLUMNS}) VALUES ({', '.join('?' * len(_JOB_FIELDS))})",
                stored,
            )
        return job

    def job(self, job_id: str) -> Job:
        with self._db() as db:
            row = db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(f"No such fine-tuning job: '{job_id}'.", param="fine_tuning_job_id")
        return _job(row)

    def jobs(self, status: tuple[Status, ...] | None = None) -> list[Job]:
        """Newest first; only those in ``status`` when given."""
        with self._db() as db:
            rows = db.execute(
                f"SELECT {_JOB_COLUMNS} FROM jobs ORDER BY created_at DESC, id"
            ).fetchall()
        found = [_job(r) for r in rows]
        return [j for j in found if status is None or j.status in status]

    def update(self, job_id: str, **changes: Any) -> Job:
        """Set some of a job's columns; the job as it is now."""
        if changes:
            sets = ", ".join(f"{k} = ?" for k in changes)
            values = [_dumps(v) if k in _JSON_COLUMNS else v for k, v in changes.items()]
            with self._db() as db:
                db.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (*values, job_id))
        return self.job(job_id)

    def finish(
        self, job_id: str, status: Status, *, error: Mapping[str, Any] | None = None, **changes: Any
    ) -> Job:
        """A job's end, unless it has ended already (a cancel that raced its success)."""
        current = self.job(job_id)
        if current.status in FINISHED:
            return current
        return self.update(
            job_id, status=status, finished_at=time.time(),
            error=dict(error) if error else None, **changes,
        )  # fmt: skip

    # -- events and checkpoints --------------------------------------------------------

    def event(
        self,
        job_id: str,
        message: str,
        *,
        level: str = "info",
        type: str = "message",
        data: Mapping[str, Any] | None = None,
    ) -> Event:
        ev = Event(new_id("ftevent"), job_id, time.time(), level, type, message,
                   dict(data) if data else None)  # fmt: skip
        with self._db() as db:
            db.execute(
                "INSERT INTO events (id, job, created_at, level, type, message, data)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (ev.id, ev.job, ev.created_at, ev.level, ev.type, ev.message, _dumps(ev.data)),
            )
        return ev

    def events(self, job_id: str, after: str | None = None, limit: int = 20) -> list[Event]:
        """Newest first (as OpenAI lists them); ``after``: older than that event."""
        self.job(job_id)
        with self._db() as db:
            if after is None:
                start = None
            else:
                found = db.execute("SELECT seq FROM events WHERE id = ?", (after,)).fetchone()
                start = found[0] if found else None
            rows = db.execute(
                "SELECT id, job, created_at, level, type, message, data FROM events"
                " WHERE job = ? AND (? IS NULL OR seq < ?) ORDER BY seq DESC LIMIT ?",
                (job_id, start, start, limit),
            ).fetchall()
        return [
            Event(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]) if r[6] else None)
            for r in rows
        ]

    def add_checkpoint(self, cp: Checkpoint) -> None:
        with self._db() as db:
            db.execute(
                "INSERT INTO checkpoints (id, job, created_at, step, model, metrics)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (cp.id, cp.job, cp.created_at, cp.step, cp.model, json.dumps(cp.metrics)),
            )

    def checkpoints(self, job_id: str) -> list[Checkpoint]:
        self.job(job_id)
        with self._db() as db:
            rows = db.execute(
                "SELECT id, job, created_at, step, model, metrics FROM checkpoints"
                " WHERE job = ? ORDER BY step DESC",
                (job_id,),
            ).fetchall()
        return [Checkpoint(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows]
