"""Datasets from traffic (issue 20) in-process on the fake engine: with ``store_content``
chat requests (whole and streamed, with tool calls, from a registry prompt) are stored
beside their usage rows with their answers, redacted of keys; audio never is; off,
nothing is; expired content is deleted at start; ``ocak usage export`` writes
chat-format JSONL with no key material in it."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from app_helpers import served
from helpers import ADD_TOOL
from ocak.cli.main import app as cli
from ocak.engines.fake import FakeEngine, echo
from ocak.protocol.generation import GenerationRequest
from ocak.protocol.record import RequestRecord
from ocak.server.content import AnswerStream, content_of
from ocak.store.content import Content, insert_content
from ocak.store.db import open_database
from ocak.store.keys import create_key
from ocak.store.usage import UsageRow, insert_usage

CALL = '<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>'
PROVIDER_KEY = "gq-upstream-5e4d3c2b1a0f"  # a configured provider's key: not key-shaped
PASTED = "sk-proj-" + "Zx9" * 8  # an OpenAI-shaped key a user pasted into a message


def script(request: GenerationRequest) -> str:
    """Calls the tool when one is offered, else echoes the last message."""
    constraint = request.constraint
    if constraint is not None and constraint.kind == "lark":
        return CALL
    if constraint is not None and constraint.param == "tools":
        return CALL.removeprefix("<tool_call>").removesuffix("</tool_call>")
    return echo(request)


def run(tmp_path: Path, check: Any, *, admin: bool = False, **settings: Any) -> str:
    """Serve with a key (made here, named ``dataset-team``) the client sends; the key."""
    db = open_database(tmp_path / "ocak.db")
    token = create_key(db, "dataset-team", admin=admin)[0]
    db.close()
    providers = {"groq": {"type": "openai", "preset": "groq"}}

    async def main() -> None:
        engine = FakeEngine("default", script=script, context_length=100_000)
        async with served(tmp_path, [engine], providers=providers, **settings) as s:
            s.client.headers["Authorization"] = f"Bearer {token}"
            await check(s.client, token)

    asyncio.run(main())
    return token


def stored(tmp_path: Path) -> list[tuple[str, list[Any], dict[str, Any], dict[str, Any]]]:
    with sqlite3.connect(tmp_path / "ocak.db") as db:
        rows = db.execute(
            "SELECT u.request_id, c.messages, c.params, c.answer FROM usage_content c"
            " JOIN usage u ON u.id = c.usage_id ORDER BY c.usage_id"
        ).fetchall()
    return [(r, json.loads(m), json.loads(p), json.loads(a)) for r, m, p, a in rows]


def export(tmp_path: Path, *args: str) -> Any:
    env = {"OCAK_DATA_DIR": str(tmp_path), "COLUMNS": "200"}
    return CliRunner().invoke(cli, ["usage", "export", *args], env=env)


def test_chat_requests_are_stored_with_answers_and_export_as_chat_jsonl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GROQ_API_KEY", PROVIDER_KEY)
    said = f"my keys: {PASTED} and {PROVIDER_KEY}"

    async def check(c: httpx.AsyncClient, token: str) -> None:
        messages = [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": f"{said} and {token}"},
        ]
        ids = {"x-request-id": "req_whole"}
        r = await c.post(
            "/v1/chat/completions",
            json={"model": "default", "messages": messages, "temperature": 0.1},
            headers=ids,
        )
        assert r.status_code == 200, r.text
        streamed = {"model": "default", "messages": messages[1:], "stream": True}
        r = await c.post("/v1/chat/completions", json=streamed, headers={"x-request-id": "req_sse"})
        assert r.status_code == 200 and "data: [DONE]" in r.text
        tools = {"model": "default", "messages": [{"role": "user", "content": "1+2?"}]}
        r = await c.post("/v1/chat/completions", json={**tools, "tools": [ADD_TOOL]})
        assert r.json()["choices"][0]["message"]["tool_calls"], r.text
        r = await c.post(
            "/v1/chat/completions",
            json={**tools, "tools": [ADD_TOOL], "stream": True},
            headers={"x-request-id": "req_sse_tool"},
        )
        assert "tool_calls" in r.text
        # Not stored: a refused request, a completion, and audio.
        r = await c.post("/v1/chat/completions", json={"model": "nope", "messages": messages})
        assert r.status_code == 404
        r = await c.post("/v1/completions", json={"model": "default", "prompt": "hi"})
        assert r.status_code == 200
        sound = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
        r = await c.post(
            "/v1/chat/completions",
            json={"model": "default", "messages": [{"role": "user", "content": [sound]}]},
        )
        assert r.status_code == 400
        wav = ("a.wav", b"RIFF$\x00\x00\x00WAVEfmt ", "audio/wav")
        await c.post("/v1/audio/transcriptions", files={"file": wav}, data={"model": "whisper"})

    token = run(tmp_path, check, store_content=True)
    rows = stored(tmp_path)
    assert [r[0] for r in rows][:2] == ["req_whole", "req_sse"] and len(rows) == 4
    _, messages, params, answer = rows[0]
    assert messages[0] == {"role": "system", "content": "Be brief."}
    assert params == {"model": "default", "temperature": 0.1}
    assert answer["finish_reason"] == "stop"
    assert answer["message"]["content"].startswith("You said: my keys: [REDACTED] and ***")
    assert rows[1][3]["message"]["content"] == answer["message"]["content"]  # the stream's text
    for _, _, params, answer in rows[2:]:  # whole and streamed: the same call, OpenAI's shape
        (call,) = answer["message"]["tool_calls"]
        assert call["type"] == "function" and call["id"]
        assert call["function"]["name"] == "add"
        assert json.loads(call["function"]["arguments"]) == {"a": 1, "b": 2}
        assert params["tools"] == [ADD_TOOL]
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("ocak.db*"))
    for secret in (PASTED, PROVIDER_KEY, token, token[12:]):
        assert secret.encode() not in raw

    out = tmp_path / "cases.jsonl"
    result = export(tmp_path, "--since", "1h", "--format", "jsonl", "--output", str(out))
    assert result.exit_code == 0, result.output
    assert "Wrote 4 requests" in result.output
    text = out.read_text(encoding="utf-8")
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) == 4
    for line, (_, messages, _, answer) in zip(lines, rows, strict=True):
        roles = [m["role"] for m in line["messages"]]
        assert roles[-1] == "assistant" and "assistant" not in roles[:-1]
        assert roles[0] in ("system", "user")
        assert line["messages"][-1] == answer["message"]  # the reference answer
        assert line["messages"][:-1] == messages
        assert {"request_id", "model", "backend", "ts"} <= set(line["metadata"])
    assert lines[0]["metadata"]["backend"] == "fake:default"
    assert lines[2]["tools"] == [ADD_TOOL]
    for secret in (PASTED, PROVIDER_KEY, token, token[:12], "dataset-team", "key_id"):
        assert secret not in text
    result = export(tmp_path, "--model", "other")
    assert result.exit_code == 0 and "No stored requests for model 'other'" in result.output
    bare = export(tmp_path, "--no-metadata")
    assert bare.exit_code == 0
    assert all(set(json.loads(x)) <= {"messages", "tools"} for x in bare.stdout.splitlines())


def test_a_registry_prompt_stores_what_it_rendered_and_names_its_version(tmp_path: Path) -> None:
    greeting = {
        "id": "npc-greeting",
        "messages": [{"role": "system", "content": "You are {{ npc }}."}],
        "variables": [{"name": "npc", "type": "string"}],
    }

    async def check(c: httpx.AsyncClient, token: str) -> None:
        assert (await c.post("/v1/prompts", json=greeting)).status_code == 201
        ref = {"id": "npc-greeting", "variables": {"npc": "Bram"}}
        body = {"model": "default", "prompt": ref, "messages": [{"role": "user", "content": "hi"}]}
        r = await c.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text

    run(tmp_path, check, admin=True, store_content=True)
    result = export(tmp_path)
    (line,) = [json.loads(x) for x in result.stdout.splitlines()]
    assert line["messages"][:2] == [
        {"role": "system", "content": "You are Bram."},
        {"role": "user", "content": "hi"},
    ]
    assert line["metadata"]["prompt"] == "npc-greeting@1"
    assert line["metadata"]["variables"] == {"npc": "Bram"}


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(record.getMessage()))


def test_off_nothing_is_stored_and_the_log_keeps_its_content(tmp_path: Path) -> None:
    access = logging.getLogger("ocak.access")
    handler, level = Lines(), access.level
    access.addHandler(handler)
    access.setLevel(logging.INFO)

    async def check(c: httpx.AsyncClient, token: str) -> None:
        body = {"model": "default", "messages": [{"role": "user", "content": "hello"}]}
        assert (await c.post("/v1/chat/completions", json=body)).status_code == 200
        r = await c.post("/v1/chat/completions", json={**body, "stream": True})
        assert r.status_code == 200

    try:
        run(tmp_path, check, log_content=True)
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
    assert stored(tmp_path) == []
    with sqlite3.connect(tmp_path / "ocak.db") as db:
        assert db.execute("SELECT COUNT(*) FROM usage").fetchone()[0] == 2
    chats = [line for line in handler.lines if line["path"] == "/v1/chat/completions"]
    whole, streamed = (line["content"]["response"] for line in chats)
    assert whole["choices"][0]["message"]["content"] == streamed == "You said: hello"
    result = export(tmp_path, "--output", str(tmp_path / "none.jsonl"))
    assert result.exit_code == 0
    assert "content storage is off" in result.output and "store_content" in result.output
    assert not (tmp_path / "none.jsonl").exists()
    assert export(tmp_path, "--format", "csv").exit_code == 2


def test_expired_content_is_deleted_when_the_server_starts(tmp_path: Path) -> None:
    db = open_database(tmp_path / "ocak.db")
    answer = {"message": {"role": "assistant", "content": "old"}, "finish_reason": "stop"}
    for age, request_id in ((3 * 86400, "req_expired"), (60, "req_recent")):
        ts = time.time() - age
        row = UsageRow(
            ts, request_id, None, None, "default", None, None, False, 1, 1, None, 1, "completed"
        )
        insert_content(db, insert_usage(db, row), ts, Content([{"role": "user"}], {}, answer))
    db.close()

    async def check(c: httpx.AsyncClient, token: str) -> None:
        for _ in range(200):
            if [r[0] for r in stored(tmp_path)] == ["req_recent"]:
                return
            await asyncio.sleep(0.01)

    run(tmp_path, check, content_retention="1d")
    assert [r[0] for r in stored(tmp_path)] == ["req_recent"]


def test_audio_is_never_stored_even_when_a_model_answered_it() -> None:
    record = RequestRecord("req_1", "POST", "/v1/chat/completions", model="gpt-4o-audio")
    answer = {"message": {"role": "assistant", "content": "a dog"}, "finish_reason": "stop"}
    sound = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
    asked = {"model": "m", "messages": [{"role": "user", "content": [sound]}]}
    record.exchange = {"request": json.dumps(asked).encode(), "answer": answer}
    assert content_of(record) is None
    spoken = {"model": "m", "modalities": ["text", "audio"], "messages": [{"role": "user"}]}
    record.exchange = {"request": json.dumps(spoken).encode(), "answer": answer}
    assert content_of(record) is None
    plain = {"model": "m", "messages": [{"role": "user", "content": "what barks?"}]}
    record.exchange = {"request": json.dumps(plain).encode(), "answer": answer}
    assert content_of(record) == Content(plain["messages"], {"model": "m"}, answer)


def test_stored_requests_are_whole_while_the_log_line_is_clipped(tmp_path: Path) -> None:
    access = logging.getLogger("ocak.access")
    handler, level = Lines(), access.level
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    long = "word " * 8000  # 40 KB: past the log's 16 KiB

    async def check(c: httpx.AsyncClient, token: str) -> None:
        body = {"model": "default", "messages": [{"role": "user", "content": long}]}
        assert (await c.post("/v1/chat/completions", json=body)).status_code == 200

    try:
        run(tmp_path, check, log_content=True, store_content=True)
    finally:
        access.removeHandler(handler)
        access.setLevel(level)
    ((_, messages, _, answer),) = stored(tmp_path)
    assert messages == [{"role": "user", "content": long}]
    assert answer["message"]["content"].startswith("You said: word word")
    (line,) = [x for x in handler.lines if x["path"] == "/v1/chat/completions"]
    assert isinstance(line["content"]["request"], str)  # cut, so no longer JSON
    assert len(line["content"]["request"]) <= 16 * 1024


def test_a_stream_is_rebuilt_from_frames_split_anywhere_and_bounded() -> None:
    def frame(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return b"data: " + json.dumps({"choices": [choice]}).encode() + b"\n\n"

    call = {"index": 0, "id": "call_9", "type": "function", "function": {"name": "add"}}
    sse = b"".join(
        [
            frame({"role": "assistant", "content": ""}),
            frame({"content": "Adding "}),
            frame({"content": "now."}),
            frame({"tool_calls": [{**call, "function": {"name": "add", "arguments": '{"a":'}}]}),
            frame({"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]}),
            frame({}, "tool_calls"),
            b"data: [DONE]\n\n",
        ]
    )
    stream = AnswerStream(1024)
    for i in range(0, len(sse), 7):  # cut mid-line, mid-JSON
        stream.feed(sse[i : i + 7])
    assert stream.answer() == {
        "message": {
            "role": "assistant",
            "content": "Adding now.",
            "tool_calls": [
                {
                    "id": "call_9",
                    "type": "function",
                    "function": {"name": "add", "arguments": '{"a": 1}'},
                }
            ],
        },
        "finish_reason": "tool_calls",
    }
    small = AnswerStream(8)
    small.feed(sse)
    assert small.answer() is None and small.over  # past the limit: not kept
    failed = AnswerStream(1024)
    failed.feed(frame({"content": "Hal"}) + b'data: {"error": {"message": "boom"}}\n\n')
    assert failed.answer() is None
