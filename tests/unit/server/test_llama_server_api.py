"""llama-server's native routes in-process on the scripted fake engine: ``/completion``'s
field names onto ocak's request, refusals by name in llama-server's error shape, its SSE
framing, ``/tokenize``/``/detokenize`` and ``/props``.

tests/e2e/test_kobold_clients.py runs the same routes on the real default model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from test_kobold_api import Seen, run

from ocak.engines.fake import FakeEngine


def refused(r: httpx.Response, name: str) -> None:
    """A 400 in llama-server's ``{"error": {"code", "message", "type"}}`` naming ``name``."""
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == 400 and isinstance(error["type"], str)
    assert name in error["message"], error


def test_completion_maps_llama_server_fields(tmp_path: Path) -> None:
    async def check(c: httpx.AsyncClient, seen: Seen, engine: FakeEngine) -> None:
        body = {"prompt": "one two", "n_predict": 8, "temperature": 0.5, "top_k": 20,
                "top_p": 0.8, "min_p": 0.1, "repeat_penalty": 1.2, "repeat_last_n": 32,
                "seed": 3, "stop": ["\n"], "cache_prompt": True, "typical_p": 1}  # fmt: skip
        r = await c.post("/completion", json=body)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["content"] == "one two" and out["stop"] is True
        assert out["stop_type"] == "eos" and out["tokens_predicted"] == 2
        assert out["tokens_evaluated"] == 2 and "predicted_per_second" in out["timings"]
        req = seen.last
        assert (req.max_tokens, req.temperature, req.top_k, req.top_p) == (8, 0.5, 20, 0.8)
        assert (req.min_p, req.repeat_penalty, req.repeat_last_n, req.seed) == (0.1, 1.2, 32, 3)
        r = await c.post("/completion", json={"prompt": "a b c", "n_predict": 1, "seed": -1})
        assert r.json()["stop_type"] == "limit" and seen.last.seed is None
        await c.post("/completion", json={"prompt": "a", "n_predict": -1})
        assert seen.last.max_tokens is None
        r = await c.post("/completion", json={"prompt": "one two three", "stop": ["x", "two"]})
        out = r.json()
        assert out["content"] == "one " and out["stop_type"] == "word"
        assert out["stopping_word"] == "two"

    run(tmp_path, check)


def test_completion_refuses_what_ocak_cannot_do_by_name(tmp_path: Path) -> None:
    async def check(c: httpx.AsyncClient, seen: Seen, engine: FakeEngine) -> None:
        refused(await c.post("/completion", json={"prompt": "a", "n_probs": 5}), "n_probs")
        refused(await c.post("/completion", json={"prompt": [1, 2]}), "prompt")
        refused(await c.post("/completion", json={"prompt": "a", "mirostat": 2}), "mirostat")
        refused(await c.post("/completion", json={"prompt": "a", "n_predict": 0}), "n_predict")
        refused(await c.post("/completion", json={"prompt": "a", "grammar": "x ::="}), "grammar")
        refused(await c.post("/completion", json={"prompt": "a", "top_p": 3}), "top_p")

    run(tmp_path, check)


def test_grammar_and_json_schema_become_constraints(tmp_path: Path) -> None:
    async def check(c: httpx.AsyncClient, seen: Seen, engine: FakeEngine) -> None:
        await c.post("/completion", json={"prompt": "a", "grammar": 'root ::= "ok"'})
        assert seen.last.constraint is not None and seen.last.constraint.kind == "lark"
        schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
        await c.post("/completion", json={"prompt": "a", "json_schema": schema})
        constraint = seen.last.constraint
        assert constraint is not None and constraint.kind == "json"
        assert constraint.schema == schema

    run(tmp_path, check)


def test_completion_streams_content_frames_then_a_stop_frame(tmp_path: Path) -> None:
    async def check(c: httpx.AsyncClient, seen: Seen, engine: FakeEngine) -> None:
        r = await c.post("/completion", json={"prompt": "x y z", "stream": True})
        assert r.headers["content-type"].startswith("text/event-stream")
        frames: list[dict[str, Any]] = [
            json.loads(f[len("data: ") :]) for f in r.text.split("\n\n") if f
        ]
        assert "".join(f["content"] for f in frames) == "x y z"
        assert [f["stop"] for f in frames] == [False] * (len(frames) - 1) + [True]
        assert frames[-1]["tokens_predicted"] == 3 and "timings" in frames[-1]
        assert "[DONE]" not in r.text

    run(tmp_path, check)


def test_tokenize_detokenize_and_props(tmp_path: Path) -> None:
    async def check(c: httpx.AsyncClient, seen: Seen, engine: FakeEngine) -> None:
        tokens = (await c.post("/tokenize", json={"content": "hi there hi"})).json()["tokens"]
        assert len(tokens) == 3 and tokens[0] == tokens[2]
        r = await c.post("/tokenize", json={"content": "hi there", "with_pieces": True})
        assert r.json()["tokens"] == [{"id": tokens[0], "piece": "hi"},
                                      {"id": tokens[1], "piece": "there"}]  # fmt: skip
        r = await c.post("/detokenize", json={"tokens": tokens})
        assert r.json() == {"content": "hi there hi"}
        refused(await c.post("/detokenize", json={"tokens": [-1]}), "vocabulary")
        props = (await c.get("/props")).json()
        assert props["default_generation_settings"]["n_ctx"] == 4096
        assert props["total_slots"] == 16 and isinstance(props["chat_template"], str)
        assert (await c.get("/health")).json()["status"] == "ok"

    run(tmp_path, check)
