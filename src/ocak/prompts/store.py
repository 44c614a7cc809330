"""Prompts in one SQLite file (prompts.db): immutable numbered versions and movable labels.

The file, its settings and schema are ``db``'s; what a version is, its checks and its
sha256 are ``model``'s, so creating the latest again changes nothing. An import checks
everything first (``exchange``) and writes in one transaction: a bad prompt anywhere
leaves the store as it was.
"""

from __future__ import annotations

import builtins
import contextlib
import difflib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from ocak.errors import InvalidRequest, NotFound
from ocak.prompts.db import (
    MIGRATIONS,
    SCHEMA_VERSION,
    PromptStoreError,
    open_prompts_db,
    open_prompts_pg,
)
from ocak.prompts.exchange import EXPORT_FORMAT, parse_export
from ocak.prompts.model import (
    LATEST,
    ImportResult,
    PromptInfo,
    Rendered,
    Version,
    canonical,
    check_id,
    check_label,
    checked,
    content_of,
    sha256_of,
)
from ocak.prompts.render import Message, parse_messages, parse_variables, render_messages

__all__ = [
    "EXPORT_FORMAT",
    "LATEST",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "ImportResult",
    "PromptInfo",
    "PromptNotFound",
    "PromptStore",
    "PromptStoreError",
    "Rendered",
    "Version",
    "to_yaml",
]

_COLUMNS = "prompt, version, messages, variables, model, params, note, sha256, created_at"


class PromptNotFound(NotFound):
    code = "prompt_not_found"

    def __init__(self, message: str) -> None:
        super().__init__(message, param="prompt")


class PromptStore:
    """All prompts of one SQLite file (or of PostgreSQL, given ``url``: shared by several
    ocak processes); usable from several threads."""

    def __init__(self, path: Path, url: str | None = None) -> None:
        self.path = path if url is None else Path("postgres")
        self._lock = threading.Lock()
        self._conn: Any = open_prompts_db(path) if url is None else open_prompts_pg(url)

    def close(self) -> None:
        """Checkpoint the WAL into the main file and close."""
        with self._lock:
            with contextlib.suppress(sqlite3.Error):  # another reader: the WAL stays
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()

    def __enter__(self) -> PromptStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create(
        self,
        prompt_id: str,
        messages: Sequence[Mapping[str, Any] | Message],
        variables: object = None,
        model: str | None = None,
        params: Mapping[str, Any] | None = None,
        note: str | None = None,
        description: str | None = None,
    ) -> Version:
        """Version 1 of a new prompt, or the next version of an existing one; the latest,
        unchanged, when it already has this content (so re-creating is harmless)."""
        check_id(prompt_id)
        msgs, decl, prms = checked(messages, variables, model, params)
        sha = sha256_of(content_of(msgs, decl, model, prms))
        with self._write() as conn:
            latest = _latest(conn, prompt_id)
            if latest is None:
                conn.execute(
                    "INSERT INTO prompts (id, description, created_at) VALUES (?, ?, ?)",
                    (prompt_id, description, time.time()),
                )
            elif description is not None:
                conn.execute(
                    "UPDATE prompts SET description = ? WHERE id = ?", (description, prompt_id)
                )
            if latest is not None and latest.sha256 == sha:
                return latest
            number = 1 if latest is None else latest.version + 1
            version = Version(prompt_id, number, msgs, decl, model, prms, note, sha, time.time())
            _insert(conn, version)
        return version

    def get(
        self, prompt_id: str, *, version: int | None = None, label: str | None = None
    ) -> Version:
        """One version: by number, by label (``latest`` included), or the latest."""
        if version is not None and label is not None:
            raise InvalidRequest("Give a version or a label, not both.", param="version")
        with self._read() as conn:
            return _get(conn, prompt_id, version, label)

    def versions(self, prompt_id: str) -> builtins.list[Version]:
        """Every version of a prompt, oldest first."""
        with self._read() as conn:
            return _versions(conn, prompt_id)

    def label(self, prompt_id: str, label: str, version: int) -> None:
        """Point ``label`` at ``version``, creating or moving it."""
        check_label(label)
        with self._write() as conn:
            _get(conn, prompt_id, version, None)
            _set_label(conn, prompt_id, label, version)

    def labels(self, prompt_id: str) -> dict[str, int]:
        with self._read() as conn:
            _get(conn, prompt_id, None, None)
            return _labels(conn, prompt_id)

    def list(self) -> builtins.list[PromptInfo]:
        """Every prompt, by id, with its latest version and labels."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT p.id, p.description, MAX(v.version), p.created_at FROM prompts p "
                "JOIN versions v ON v.prompt = p.id GROUP BY p.id ORDER BY p.id"
            ).fetchall()
            return [PromptInfo(r[0], r[1], r[2], _labels(conn, r[0]), r[3]) for r in rows]

    def diff(self, prompt_id: str, a: int, b: int) -> str:
        """A unified diff of two versions' YAML (``prompt@a`` to ``prompt@b``)."""
        with self._read() as conn:
            old, new = _get(conn, prompt_id, a, None), _get(conn, prompt_id, b, None)
        texts = [
            to_yaml({k: v for k, v in x.to_dict().items() if k != "created_at"}) for x in (old, new)
        ]
        return "".join(
            difflib.unified_diff(
                texts[0].splitlines(keepends=True),
                texts[1].splitlines(keepends=True),
                f"{prompt_id}@{a}",
                f"{prompt_id}@{b}",
            )
        )

    def render(
        self,
        prompt_id: str,
        variables: Mapping[str, Any] | None = None,
        *,
        version: int | None = None,
        label: str | None = None,
    ) -> Rendered:
        """A version's messages rendered with ``variables``, with its model and params."""
        v = self.get(prompt_id, version=version, label=label)
        messages = render_messages(v.messages, v.variables, variables or {})
        return Rendered(v.prompt, v.version, messages, v.model, v.params)

    def export(self, prompt_ids: Sequence[str] | None = None) -> dict[str, Any]:
        """The given prompts (all when None), every version and label, as a plain dict."""
        with self._read() as conn:
            if prompt_ids is None:
                ids = [r[0] for r in conn.execute("SELECT id FROM prompts ORDER BY id")]
            else:
                ids = list(dict.fromkeys(prompt_ids))
            prompts = []
            for pid in ids:
                versions = _versions(conn, pid)
                row = conn.execute(
                    "SELECT description, created_at FROM prompts WHERE id = ?", (pid,)
                ).fetchone()
                prompts.append(
                    {
                        "id": pid,
                        "description": row[0],
                        "created_at": row[1],
                        "versions": [v.to_dict() for v in versions],
                        "labels": _labels(conn, pid),
                    }
                )
        return {"format": EXPORT_FORMAT, "prompts": prompts}

    def import_(self, data: Mapping[str, Any]) -> ImportResult:
        """Add what an export holds that this store lacks, all or nothing.

        A version number this store has with other content is a conflict (nothing is
        written); versions it lacks are appended in order; labels are set as exported.
        """
        parsed = parse_export(data)
        created = added = unchanged = labels_set = 0
        written: builtins.list[tuple[str, int]] = []
        with self._write() as conn:
            for i, (pid, description, created_at, versions, labels) in enumerate(parsed):
                have = {v.version: v for v in _versions(conn, pid, missing_ok=True)}
                if not have:
                    conn.execute(
                        "INSERT INTO prompts (id, description, created_at) VALUES (?, ?, ?)",
                        (pid, description, created_at),
                    )
                    created += 1
                for v in versions:
                    mine = have.get(v.version)
                    if mine is not None and mine.sha256 != v.sha256:
                        raise InvalidRequest(
                            f"Conflict: {pid} version {v.version} here differs from the "
                            "imported one; nothing was imported.",
                            param=f"prompts.[{i}].versions.[{v.version - 1}]",
                        )
                    if mine is None:
                        if have and v.version != max(have) + 1:
                            raise InvalidRequest(
                                f"{pid} version {v.version} would leave a gap after "
                                f"version {max(have)}.",
                                param=f"prompts.[{i}].versions.[{v.version - 1}]",
                            )
                        _insert(conn, v)
                        have[v.version] = v
                        written.append((pid, v.version))
                        added += 1
                    else:
                        unchanged += 1
                current = _labels(conn, pid)
                for name, number in labels.items():
                    if number not in have:
                        raise InvalidRequest(
                            f"The label '{name}' of {pid} points at a missing version {number}.",
                            param=f"prompts.[{i}].labels.{name}",
                        )
                    if current.get(name) != number:
                        _set_label(conn, pid, name, number)
                        labels_set += 1
        return ImportResult(created, added, unchanged, labels_set, tuple(written))

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise PromptStoreError(f"cannot read {self.path}: {exc}") from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """Several statements committed together (``BEGIN IMMEDIATE``: writers queue)."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise PromptStoreError(f"cannot write {self.path}: {exc}") from exc
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise PromptStoreError(f"cannot write {self.path}: {exc}") from exc
                raise


def _row_version(row: Sequence[Any]) -> Version:
    messages = parse_messages(json.loads(row[2]))
    variables = parse_variables(json.loads(row[3]))
    return Version(
        row[0], row[1], messages, variables, row[4], json.loads(row[5]), row[6], row[7], row[8]
    )


def _insert(conn: sqlite3.Connection, v: Version) -> None:
    conn.execute(
        f"INSERT INTO versions ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            v.prompt,
            v.version,
            canonical([m.to_dict() for m in v.messages]),
            canonical([x.to_dict() for x in v.variables]),
            v.model,
            canonical(dict(v.params)),
            v.note,
            v.sha256,
            v.created_at,
        ),
    )


def _latest(conn: sqlite3.Connection, prompt_id: str) -> Version | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM versions WHERE prompt = ? ORDER BY version DESC LIMIT 1",
        (prompt_id,),
    ).fetchone()
    return None if row is None else _row_version(row)


def _get(
    conn: sqlite3.Connection, prompt_id: str, version: int | None, label: str | None
) -> Version:
    latest = _latest(conn, prompt_id)
    if latest is None:
        raise PromptNotFound(f"The prompt '{prompt_id}' does not exist.")
    if label is not None and label != LATEST:
        found = conn.execute(
            "SELECT version FROM labels WHERE prompt = ? AND label = ?", (prompt_id, label)
        ).fetchone()
        if found is None:
            raise PromptNotFound(f"The prompt '{prompt_id}' has no label '{label}'.")
        version = int(found[0])
    if version is None or version == latest.version:
        return latest
    if not 1 <= version <= latest.version:  # also keeps huge numbers away from SQLite
        raise PromptNotFound(f"The prompt '{prompt_id}' has no version {version}.")
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM versions WHERE prompt = ? AND version = ?", (prompt_id, version)
    ).fetchone()
    if row is None:
        raise PromptNotFound(f"The prompt '{prompt_id}' has no version {version}.")
    return _row_version(row)


def _versions(conn: sqlite3.Connection, prompt_id: str, missing_ok: bool = False) -> list[Version]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM versions WHERE prompt = ? ORDER BY version", (prompt_id,)
    ).fetchall()
    if not rows and not missing_ok:
        raise PromptNotFound(f"The prompt '{prompt_id}' does not exist.")
    return [_row_version(r) for r in rows]


def _labels(conn: sqlite3.Connection, prompt_id: str) -> dict[str, int]:
    rows = conn.execute(
        "SELECT label, version FROM labels WHERE prompt = ? ORDER BY label", (prompt_id,)
    ).fetchall()
    return {r[0]: int(r[1]) for r in rows}


def _set_label(conn: sqlite3.Connection, prompt_id: str, label: str, version: int) -> None:
    conn.execute(
        "INSERT INTO labels (prompt, label, version, updated_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (prompt, label) DO UPDATE SET version = excluded.version, "
        "updated_at = excluded.updated_at",
        (prompt_id, label, version, time.time()),
    )


class _Dumper(yaml.SafeDumper):
    """YAML with multi-line strings as literal blocks, so a diff shows lines, not escapes."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(obj: object) -> str:
    """YAML for people and diffs: keys in order, multi-line strings as blocks."""
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1000)
