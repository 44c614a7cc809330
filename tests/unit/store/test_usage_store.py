"""The SQLite store: WAL, schema migrations (an older file upgrades), keys as hashes, usage."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from ocak.errors import InvalidRequest, NotFound
from ocak.store.db import SCHEMA_VERSION, Store, StoreError, open_database
from ocak.store.keys import create_key, hash_key, list_keys, revoke_key, stored_keys
from ocak.store.usage import UsageRow, count_by_status, insert_usage, summarize, tokens_used

# The schema as ocak first shipped it (version 1), frozen here: the code's migration
# list may change, this file must keep upgrading.
V1_SCHEMA = """
CREATE TABLE keys (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, prefix TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE, models TEXT, rpm INTEGER, tpm INTEGER,
    budget_tokens INTEGER, created_at REAL NOT NULL, revoked_at REAL
);
CREATE TABLE usage (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, request_id TEXT NOT NULL, key_name TEXT,
    model TEXT, backend TEXT, prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0, ttft_ms REAL, total_ms REAL NOT NULL,
    status TEXT NOT NULL
);
PRAGMA user_version = 1;
"""


def row(**kw: object) -> UsageRow:
    base: dict[str, object] = dict(
        ts=time.time(),
        request_id="req_1",
        key_id=None,
        key_name=None,
        model="default",
        backend="llamacpp:default",
        locality="local",
        stream=False,
        prompt_tokens=10,
        completion_tokens=5,
        ttft_ms=12.5,
        total_ms=40.0,
        status="completed",
    )
    base.update(kw)
    return UsageRow(**base)  # type: ignore[arg-type]


def test_a_new_database_is_in_wal_mode_at_the_latest_schema(tmp_path: Path) -> None:
    db = open_database(tmp_path / "sub" / "ocak.db")
    assert db.schema_version() == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode")[0][0] == "wal"
    db.close()


def test_a_version_1_database_is_upgraded_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "ocak.db"
    old = sqlite3.connect(path)
    old.executescript(V1_SCHEMA)
    digest = hash_key("ocak-old-key").hex()
    old.execute(
        "INSERT INTO keys (name, prefix, hash, models, rpm, created_at) VALUES (?,?,?,?,?,?)",
        ("legacy", "ocak-old-key", digest, '["default"]', 5, 1000.0),
    )
    old.execute(
        "INSERT INTO usage (ts, request_id, key_name, model, backend, prompt_tokens,"
        " completion_tokens, ttft_ms, total_ms, status) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (1000.0, "req_old", "legacy", "default", "llamacpp:default", 7, 3, 5.0, 20.0, "completed"),
    )
    old.commit()
    old.close()

    db = open_database(path)
    assert db.schema_version() == SCHEMA_VERSION > 1
    (key,) = list_keys(db)
    assert (key.name, key.models, key.rpm, key.locality) == ("legacy", ("default",), 5, None)
    assert stored_keys(db)[0].hash == hash_key("ocak-old-key")
    # The new columns work on the upgraded file.
    insert_usage(db, row(request_id="req_new", key_id=key.id, key_name="legacy"))
    by_key = {s.group: s for s in summarize(db, by="key")}
    assert by_key["legacy"].requests == 2
    assert by_key["legacy"].prompt_tokens == 17
    # Opening again is a no-op.
    db.close()
    assert open_database(path).schema_version() == SCHEMA_VERSION


def test_a_database_newer_than_this_ocak_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ocak.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        open_database(path)


def test_a_key_is_stored_only_as_a_hash(tmp_path: Path) -> None:
    db = open_database(tmp_path / "ocak.db")
    key, info = create_key(db, "alice", models=["default", " b "], rpm=10)
    assert key.startswith("ocak-") and len(key) > 40
    assert info.models == ("b", "default")
    assert info.prefix == key[:12]
    db.close()  # checkpoint: everything is in the main file now
    raw = (tmp_path / "ocak.db").read_bytes()
    assert key.encode() not in raw
    assert key[12:].encode() not in raw
    assert hash_key(key).hex().encode() in raw


def test_a_key_is_kept_as_its_hash_on_either_engine(store: Store) -> None:
    key, info = create_key(store, "alice", admin=True)
    rows = store.execute("SELECT * FROM keys")
    assert len(rows) == 1 and hash_key(key).hex() in rows[0]
    assert not any(key in str(v) or key[12:] in str(v) for v in rows[0])
    (stored,) = stored_keys(store)
    assert stored.info == info and stored.info.admin is True


def test_names_are_unique_among_active_keys_only(store: Store) -> None:
    db = store
    create_key(db, "alice")
    with pytest.raises(InvalidRequest, match="already exists"):
        create_key(db, "alice")
    revoked = revoke_key(db, "alice")
    assert revoked.revoked
    create_key(db, "alice")
    names = [(k.name, k.revoked) for k in list_keys(db)]
    assert names == [("alice", True), ("alice", False)]
    assert [k.info.name for k in stored_keys(db)] == ["alice"]
    with pytest.raises(NotFound):
        revoke_key(db, "nobody")


@pytest.mark.parametrize(
    ("kw", "param"),
    [
        ({"rpm": 0}, "rpm"),
        ({"tpm": -1}, "tpm"),
        ({"locality": "moon"}, "locality"),
        ({"budget_period": 60.0}, "budget_period"),
    ],
)
def test_bad_key_settings_are_refused(store: Store, kw: dict[str, object], param: str) -> None:
    db = store
    with pytest.raises(InvalidRequest) as info:
        create_key(db, "k", **kw)  # type: ignore[arg-type]
    assert info.value.param == param


def test_summaries_group_and_filter_by_time(store: Store) -> None:
    db = store
    now = time.time()
    insert_usage(db, row(ts=now - 7200, key_id=1, key_name="a", status="completed"))
    insert_usage(db, row(ts=now, key_id=1, key_name="a", status="cancelled", completion_tokens=2))
    insert_usage(db, row(ts=now, key_name="b", model="other", backend=None, status="rejected"))
    by_model = {s.group: s for s in summarize(db, by="model")}
    assert by_model["default"].requests == 2
    assert by_model["default"].completed == 1 and by_model["default"].cancelled == 1
    assert by_model["other"].rejected == 1
    recent = {s.group: s.requests for s in summarize(db, by="key", since=now - 60)}
    assert recent == {"a": 1, "b": 1}
    assert {s.group for s in summarize(db, by="backend")} == {"llamacpp:default", "-"}
    assert tokens_used(db, 1) == 15 + 12
    assert tokens_used(db, 1, since=now - 60) == 12
    assert count_by_status(db) == {"completed": 1, "cancelled": 1, "rejected": 1}


def test_client_text_is_clipped_before_it_is_stored(store: Store) -> None:
    db = store
    insert_usage(db, row(model="m" * 10_000))
    assert len(summarize(db, by="model")[0].group) == 200


def test_a_server_checkpoints_the_wal_off_the_request_path(tmp_path: Path) -> None:
    from helpers import wait_until

    path = tmp_path / "ocak.db"
    db = open_database(path)
    db.checkpoint_in_background(interval=0.05)
    assert db.execute("PRAGMA wal_autocheckpoint")[0][0] == 0  # commits never checkpoint
    before = path.stat().st_size
    for i in range(200):
        insert_usage(db, row(request_id=f"req_{i}"))
    # The background thread copies the WAL's pages into the main file.
    assert wait_until(lambda: path.stat().st_size > before, timeout=30)
    db.close()
    assert not (tmp_path / "ocak.db-wal").exists()
    assert len(open_database(path).execute("SELECT id FROM usage")) == 200
