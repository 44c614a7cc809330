"""Stored content (issue 20): migration 4 keeps an older file's rows, content rows beside
usage rows, redaction of key shapes, retention that deletes (and overwrites) old content,
and the chat-format line an export writes."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from ocak.store.content import (
    REDACTED,
    Content,
    chat_line,
    content_count,
    insert_content,
    purge_content,
    redact,
    stored_content,
)
from ocak.store.db import SCHEMA_VERSION, Store, migrate, open_database
from ocak.store.usage import UsageRow, insert_usage, recent_usage


def row(**kw: object) -> UsageRow:
    base: dict[str, object] = dict(
        ts=time.time(),
        request_id="req_1",
        key_id=7,
        key_name="alice",
        model="default",
        backend="llama.cpp:default",
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


HELLO = Content(
    messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello."},
    ],
    params={"model": "default", "temperature": 0.2},
    answer={"message": {"role": "assistant", "content": "Hello."}, "finish_reason": "stop"},
)


def test_a_version_3_file_upgrades_to_the_latest_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "ocak.db"
    old = sqlite3.connect(path, isolation_level=None)
    assert migrate(old, path, target=3) == 3
    old.execute(
        "INSERT INTO usage (ts, request_id, key_name, model, backend, prompt_tokens,"
        " completion_tokens, ttft_ms, total_ms, status) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (1000.0, "req_old", "legacy", "default", "llama.cpp:default", 7, 3, 5.0, 20.0, "completed"),
    )
    old.close()

    db = open_database(path)
    assert db.schema_version() == SCHEMA_VERSION == 5
    (kept,) = recent_usage(db)
    assert (kept.request_id, kept.prompt_tokens, kept.prompt) == ("req_old", 7, None)
    usage_id = insert_usage(db, row(request_id="req_new", prompt="npc-greeting@3"))
    assert recent_usage(db)[0].prompt == "npc-greeting@3"
    insert_content(db, usage_id, time.time(), HELLO)
    assert content_count(db) == 1
    db.close()


def test_content_sits_beside_its_usage_row_and_exports_as_a_chat_line(store: Store) -> None:
    db = store
    insert_usage(db, row(request_id="req_without_content"))
    usage_id = insert_usage(db, row(request_id="req_a", prompt="npc-greeting@3", stream=True))
    insert_content(db, usage_id, 1000.0, HELLO)
    (x,) = stored_content(db)
    assert (x.request_id, x.prompt, x.stream) == ("req_a", "npc-greeting@3", True)
    line = chat_line(x)
    assert line["messages"] == [*HELLO.messages, {"role": "assistant", "content": "Hello."}]
    assert line["metadata"] == {
        "request_id": "req_a",
        "model": "default",
        "backend": "llama.cpp:default",
        "ts": "1970-01-01T00:16:40.000Z",
        "prompt": "npc-greeting@3",
        "finish_reason": "stop",
        "stream": True,
        "params": {"temperature": 0.2},
    }
    assert "alice" not in str(line) and not any("key" in k for k in line["metadata"])
    assert set(chat_line(x, metadata=False)) == {"messages"}
    assert list(stored_content(db, model="other")) == []
    assert list(stored_content(db, since=2000.0)) == []
    db.close()


def test_tools_go_to_the_top_level_as_openai_fine_tuning_has_them(store: Store) -> None:
    db = store
    tool = {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}
    call = {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": "{}"}}
    content = Content(
        [{"role": "user", "content": "add"}],
        {"model": "default", "tools": [tool], "parallel_tool_calls": False},
        {"message": {"role": "assistant", "content": None, "tool_calls": [call]}},
    )
    insert_content(db, insert_usage(db, row()), time.time(), content)
    (x,) = stored_content(db)
    line = chat_line(x)
    assert line["tools"] == [tool] and line["parallel_tool_calls"] is False
    assert line["messages"][-1]["tool_calls"] == [call]
    db.close()


def test_key_shapes_and_held_secrets_are_redacted() -> None:
    secrets = {
        "ocak-" + "A1b2_C3d4-" * 4: REDACTED,
        "sk-proj-abcdefghijklmnopqrstuvwx": REDACTED,
        "sk-ant-api03-abcdefghijklmnop1234": REDACTED,
        "gsk_abcdefghijklmnopqrstuvwx12": REDACTED,
        "hf_abcdefghijklmnopqrstuvwx": REDACTED,
        "r8_abcdefghijklmnopqrstuvwx": REDACTED,
        "Bearer abc.def-1234567890": "Bearer " + REDACTED,
        "api_key = 'q9w8e7r6t5y4'": "api_key = '" + REDACTED + "'",
    }
    for secret, expected in secrets.items():
        assert redact(f"use {secret} here") == f"use {expected} here", secret
    held = "upstream-9f8e7d6c"
    assert redact(f"x {held} y", lambda t: t.replace(held, "***")) == "x *** y"
    for plain in ("task-management-system-design", "bearer bonds", "sk-learn", "a password"):
        assert redact(plain) == plain


def test_retention_deletes_old_content_and_its_text_leaves_the_file(tmp_path: Path) -> None:
    path = tmp_path / "ocak.db"
    db = open_database(path)
    now = time.time()
    old = Content([{"role": "user", "content": "an old forgotten line"}], {}, HELLO.answer)
    insert_content(db, insert_usage(db, row(ts=now - 40 * 86400)), now - 40 * 86400, old)
    insert_content(db, insert_usage(db, row(ts=now)), now, HELLO)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert b"an old forgotten line" in path.read_bytes()
    assert purge_content(db, now - 30 * 86400) == 1
    assert [x.content.messages for x in stored_content(db)] == [HELLO.messages]
    assert len(recent_usage(db)) == 2  # the usage rows (accounting) stay
    db.close()
    assert b"an old forgotten line" not in path.read_bytes()  # secure_delete overwrote it
    db = open_database(path)
    assert purge_content(db) == 1 and content_count(db) == 0  # --all
    db.close()
