"""Registry prompts in chat requests and the ``/v1/prompts`` API, on the fake engine.

The fake engine answers with what it was given (every message, and the temperature), so
each test sees what the prompt rendered into: by label, by version, after a label moved,
with the request's own messages after it, and the version named in the response, its
header and the usage row.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx

from app_helpers import served
from ocak.engines.fake import FakeEngine
from ocak.protocol.generation import GenerationRequest

GREETING = {
    "id": "npc-greeting",
    "messages": [
        {"role": "system", "content": "You are {{ npc }}, a {{ mood }} innkeeper."},
        {"role": "user", "content": "Greet {{ player }}."},
    ],
    "variables": [
        {"name": "npc", "type": "string"},
        {"name": "mood", "default": "cheerful"},
        {"name": "player", "type": "string"},
    ],
    "params": {"temperature": 0.3, "max_tokens": 40},
}


def shown(r: GenerationRequest) -> str:
    """Everything the engine got, as words: each message, then the temperature."""
    said = " / ".join(f"{m.role}: {m.content}" for m in r.messages)
    return f"{said} / t={r.temperature}"


def run(tmp_path: Path, check: Any, **settings: Any) -> None:
    async def main() -> None:
        engine = FakeEngine("default", script=shown, context_length=100_000)
        async with served(tmp_path, [engine], **settings) as s:
            await check(s.client)

    asyncio.run(main())


async def create(c: httpx.AsyncClient, **changes: Any) -> dict[str, Any]:
    r = await c.post("/v1/prompts", json={**GREETING, **changes})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def chat(prompt: dict[str, Any], **body: Any) -> dict[str, Any]:
    return {"model": "default", "prompt": prompt, **body}


VARS = {"npc": "Bram", "player": "Ayla"}


def test_label_renders_and_moving_it_changes_the_next_request(tmp_path: Path) -> None:
    async def check(c: httpx.AsyncClient) -> None:
        v1 = await create(c, labels=["production"])
        assert v1["version"] == 1 and v1["labels"] == ["production"]
        v2 = await create(
            c,
            messages=[
                {"role": "system", "content": "You are {{ npc }}, a grumpy innkeeper."},
                {"role": "user", "content": "Greet {{ player }}."},
            ],
            note="grumpier",
        )
        assert v2["version"] == 2 and v2["labels"] == []
        ref = {"id": "npc-greeting", "label": "production", "variables": VARS}
        r = await c.post("/v1/chat/completions", json=chat(ref))
        assert r.status_code == 200, r.text
        text = r.json()["choices"][0]["message"]["content"]
        assert "system: You are Bram, a cheerful innkeeper." in text
        assert "user: Greet Ayla." in text
        assert "t=0.3" in text  # the version's params, where the request set none
        assert r.json()["prompt"] == {"id": "npc-greeting", "version": 1}
        assert r.headers["x-ocak-prompt"] == "npc-greeting@1"

        r = await c.put("/v1/prompts/npc-greeting/labels/production", json={"version": 2})
        assert r.status_code == 200, r.text
        r = await c.post("/v1/chat/completions", json=chat(ref, temperature=0.9))
        text = r.json()["choices"][0]["message"]["content"]
        assert "grumpy innkeeper" in text and "cheerful" not in text
        assert "t=0.9" in text  # the request's own setting wins
        assert r.json()["prompt"] == {"id": "npc-greeting", "version": 2}

    run(tmp_path, check)


def test_request_messages_follow_and_model_comes_from_the_version(tmp_path: Path) -> None:
    async def check(c: httpx.AsyncClient) -> None:
        await create(c, model="default")
        body = {
            "prompt": {"id": "npc-greeting", "version": 1, "variables": VARS},
            "messages": [
                {"role": "assistant", "content": "Hm?"},
                {"role": "user", "content": "Ale."},
            ],
            "stream": True,
        }
        async with c.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            assert r.headers["x-ocak-prompt"] == "npc-greeting@1"
            lines = [json.loads(x[6:]) async for x in r.aiter_lines() if x.startswith("data: {")]
        text = "".join(
            ch["choices"][0]["delta"].get("content") or "" for ch in lines if ch["choices"]
        )
        assert text.index("Greet Ayla.") < text.index("assistant: Hm?") < text.index("user: Ale.")
        assert lines[0]["model"] == "default"

    run(tmp_path, check)


def test_bad_prompt_references_are_clear_errors(tmp_path: Path) -> None:
    async def check(c: httpx.AsyncClient) -> None:
        await create(c)
        cases = [
            ({"id": "nope"}, 404, "prompt"),
            ({"id": "npc-greeting", "label": "production"}, 404, "prompt"),
            ({"id": "npc-greeting", "version": 7}, 404, "prompt"),
            ({"id": "npc-greeting", "variables": {"npc": "Bram"}}, 400, "player"),
            ({"id": "npc-greeting", "variables": {**VARS, "extra": 1}}, 400, "extra"),
            ({"id": "npc-greeting", "variables": {**VARS, "npc": 5}}, 400, "npc"),
            ({"id": "npc-greeting", "version": 1, "label": "x"}, 400, "prompt"),
        ]
        for ref, status, named in cases:
            r = await c.post("/v1/chat/completions", json=chat(ref))
            assert r.status_code == status, (ref, r.text)
            error = r.json()["error"]
            assert named in error["message"] or named in (error.get("param") or ""), error
        # no model, and the version pins none
        r = await c.post(
            "/v1/chat/completions", json={"prompt": {"id": "npc-greeting", "variables": VARS}}
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "model", r.text
        # neither messages nor a prompt
        r = await c.post("/v1/chat/completions", json={"model": "default", "messages": []})
        assert r.status_code == 400 and r.json()["error"]["param"] == "messages", r.text

    run(tmp_path, check)


def test_usage_row_names_the_version(tmp_path: Path) -> None:
    async def check(c: httpx.AsyncClient) -> None:
        await create(c)
        ref = {"id": "npc-greeting", "variables": VARS}
        r = await c.post("/v1/chat/completions", json=chat(ref))
        assert r.status_code == 200, r.text

    run(tmp_path, check)
    with sqlite3.connect(tmp_path / "ocak.db") as db:
        rows = db.execute("SELECT model, prompt FROM usage").fetchall()
    assert rows == [("default", "npc-greeting@1")]


def test_registry_api_diff_render_export_import(tmp_path: Path) -> None:
    async def check(c: httpx.AsyncClient) -> None:
        await create(c, labels=["production"])
        await create(c, params={"temperature": 0.5})
        r = await c.get("/v1/prompts")
        assert [(p["id"], p["latest"], p["labels"]) for p in r.json()["data"]] == [
            ("npc-greeting", 2, {"production": 1})
        ]
        r = await c.get("/v1/prompts/npc-greeting/diff", params={"a": 1, "b": 2})
        assert (
            "-  temperature: 0.3" in r.json()["diff"] and "+  temperature: 0.5" in r.json()["diff"]
        )
        r = await c.post(
            "/v1/prompts/npc-greeting/render", json={"label": "production", "variables": VARS}
        )
        assert r.json()["messages"][1] == {"role": "user", "content": "Greet Ayla."}
        r = await c.get("/v1/prompts/npc-greeting/labels/latest")
        assert r.json()["version"] == 2
        exported = (await c.get("/v1/prompts/export")).json()
        # a version is immutable: the same number with other content is refused, all of it
        changed = json.loads(json.dumps(exported))
        changed["prompts"][0]["versions"][1]["params"] = {"temperature": 1.0}
        changed["prompts"][0]["versions"][1].pop("sha256")
        r = await c.post("/v1/prompts/import", json=changed)
        assert r.status_code == 400 and "Conflict" in r.json()["error"]["message"], r.text
        r = await c.post("/v1/prompts/import", json=exported)
        assert r.json()["versions_unchanged"] == 2 and r.json()["versions_added"] == 0

    run(tmp_path, check)


def test_changing_prompts_needs_the_administrator_scope(tmp_path: Path) -> None:
    async def main() -> None:
        engine = FakeEngine("default", script=shown, context_length=100_000)
        async with served(tmp_path, [engine], key=True) as s:  # an ordinary key
            r = await s.client.post("/v1/prompts", json=GREETING)
            assert r.status_code == 403, r.text
            r = await s.client.put("/v1/prompts/x/labels/production", json={"version": 1})
            assert r.status_code == 403, r.text
            r = await s.client.get("/v1/prompts")
            assert r.status_code == 200, r.text

    asyncio.run(main())
