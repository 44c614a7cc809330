"""Ollama's API in-process on the scripted fake engine: the translation of bodies and
options onto ocak's request, refusals by name in Ollama's error shape, NDJSON framing,
tool calls with object arguments, the model listings and keep_alive.

tests/e2e/test_ollama_clients.py checks the same routes with the real ``ollama`` client
and LangChain's ``ChatOllama`` on the real default model.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from app_helpers import served
from helpers import ADD_TOOL
from ocak.engines.fake import FakeEngine, echo
from ocak.protocol.generation import GenerationRequest

CALL = '<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>'
ADD = ADD_TOOL
HI = [{"role": "user", "content": "hi there"}]


class Seen:
    """The fake engine's script: records each request; calls a tool when offered one,
    writes JSON when the answer is constrained to it, else echoes."""

    def __init__(self) -> None:
        self.requests: list[GenerationRequest] = []

    def __call__(self, request: GenerationRequest) -> str:
        self.requests.append(request)
        constraint = request.constraint
        if constraint is not None and constraint.kind == "lark":
            return CALL
        if constraint is not None and constraint.param == "tools":  # a call is required
            return CALL.removeprefix("<tool_call>").removesuffix("</tool_call>")
        if constraint is not None:
            return '{"a": 1}'
        return echo(request)

    @property
    def last(self) -> GenerationRequest:
        return self.requests[-1]


Check = Callable[[httpx.AsyncClient, Seen, FakeEngine], Awaitable[None]]


def run(tmp_path: Path, check: Check, *, key: bool = False) -> None:
    async def main() -> None:
        seen = Seen()
        engine = FakeEngine("fake", script=seen, context_length=4096)
        async with served(tmp_path, [engine], key=key) as s:
            await check(s.client, seen, engine)

    asyncio.run(main())


def lines(r: httpx.Response) -> list[dict[str, Any]]:
    assert r.headers["content-type"].startswith("application/x-ndjson")
    assert r.text.endswith("\n")
    return [json.loads(line) for line in r.text.splitlines()]


def refused(r: httpx.Response, name: str) -> str:
    """A 400 in Ollama's shape whose message names ``name``."""
    assert r.status_code == 400, r.text
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"], str)
    assert f"'{name}'" in body["error"], body
    return str(body["error"])


TIMINGS = ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration",
           "eval_count", "eval_duration")  # fmt: skip


def test_chat_streams_ndjson_lines_ending_in_done_with_timings(tmp_path: Path) -> None:
    async def check(c: httpx.AsyncClient, seen: Seen, engine: FakeEngine) -> None:
        r = await c.post("/api/chat", json={"model": "fake", "messages": HI})
        assert r.status_code == 200
        assert r.headers["x-ocak-locality"] == "local" and r.headers["x-ocak-backend"]
        got = lines(r)
        *pieces, last = got
        assert len(pieces) == 4 and all(p["done"] is False for p in pieces)
        assert "".join(p["message"]["content"] for p in pieces) == "You said: hi there"
        assert all(p["message"]["role"] == "assistant" and p["model"] == "fake" for p in got)
        assert last["done"] is True and last["done_reason"] == "stop"
        assert last["message"] == {"role": "assistant", "content": ""}
        assert all(isinstance(last[k], int) and last[k] >= 0 for k in TIMINGS)
        assert last["eval_count"] == 4 and last["prompt_eval_count"] > 0
        assert last["total_duration"] >= last["eval_duration"]
        assert last["created_at"].endswith("Z")

    run(tmp_path, check)


def test_stream_false_is_one_object_and_generate_uses_system_and_prompt(
    tmp_path: Path,
) -> None:
    async def check(c: httpx.AsyncClient, seen: Seen, engine: FakeEngine) -> None:
        r = await c.post("/api/chat", json={"model": "fake", "messages": HI, "stream": False})
        body = r.json()
        assert r.headers["content-type"] == "application/json"
        assert body["message"]["content"] == "You said: hi there" and body["done"] is True
        r = await c.post(
            "/api/generate",
            json={"model": "fake", "prompt": "why", "system": "Be brief.", "stream": False},
        )
        assert r.json()["response"] == "You said: why"
        msgs = seen.last.messages or []
        assert [(m.role, m.content) for m in msgs] == [("system", "Be brief."), ("user", "why")]
        r = await c.post("/api/generate", json={"model": "fake", "prompt": "as is", "raw": True})
        assert "".join(p["response"] for p in lines(r)) == "as is"
        assert seen.last.prompt == "as is" and seen.last.messages is None
        assert seen.last.max_tokens is None  # not OpenAI's completion default of 16

    run(tmp_path, check)


def test_options_map_onto_the_request(tmp_path: Path) -> None:
    async def check(c: httpx.AsyncClient, seen: Seen, engine: FakeEngine) -> None:
        options = {"num_predict": 7, "temperature": 0.3, "top_p": 0.9, "seed": 42,
                   "stop": ["nothing"], "presence_penalty": 0.5, "frequency_penalty": 0.25,
                   "top_k": 40, "min_p": 0.05, "repeat_penalty": 1.1, "repeat_last_n": 64,
                   "num_ctx": 2048, "mirostat": 0, "tfs_z": 1.0, "typical_p": 1.0,
                   "num_thread": 2, "num_gpu": 0, "num_keep": 4}  # fmt: skip
        r = await c.post(
            "/api/chat",
            json={"model": "fake", "messages": HI, "options": options, "stream": False},
        )
        assert r.status_code == 200, r.text
        req = seen.last
        assert (req.max_tokens, req.temperature, req.top_p, req.seed) == (7, 0.3, 0.9, 42)
        assert (req.stop, req.presence_penalty, req.frequency_penalty) == (["nothing"], 0.5, 0.25)
        for name, value in (("top_k", 40), ("min_p", 0.05), ("repeat_penalty", 1.1)):
            if hasattr(req, name):  # the llama-server sampler fields, once they exist
                assert getattr(req, name) == value
        cut = await c.post(
            "/api/generate",
            json={"model": "fake", "prompt": "a b c d e", "stream": False,
                  "options": {"num_predict": 2}},
        )  # fmt: skip
        assert cut.json()["done_reason"] == "length" and cut.json()["eval_count"] == 2
        stopped = await c.post(
            "/api/generate",
            json={"model": "fake", "prompt": "a b c", "stream": False, "options": {"stop": "b"}},
        )
        assert stopped.json()["response"] == "You said: a "
        for unlimited in (-1, -2):
            await c.post(
                "/api/generate",
                json={"model": "fake", "prompt": "x", "options": {"num_predict": unlimited}},
            )
            assert seen.last.max_tokens is None

    run(tmp_path, check)


@pytest.mark.parametrize(
    ("body", "name"),
    [
        ({"options": {"mirostat": 2}}, "options.mirostat"),
        ({"options": {"tfs_z": 0.5}}, "options.tfs_z"),
        ({"options": {"typical_p": 0.7}}, "options.typical_p"),
        ({"options": {"temperature": "hot"}}, "options.temperature"),
        ({"options": {"temperature": 5}}, "options.temperature"),
        ({"options": {"num_predict": -5}}, "options.num_predict"),
        ({"options": {"num_ctx": 100_000}}, "options.num_ctx"),
        ({"think": True}, "think"),
        ({"logprobs": True}, "logprobs"),
        ({"format": "yaml"}, "format"),
        ({"keep_alive": "soon"}, "keep_alive"),
        ({"messages": [{"role": "user", "content": "x", "images": ["aGk="]}]},
         "messages.[0].images"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages.[0].role"),
    ],
)  # fmt: skip
def test_chat_refuses_what_it_cannot_honour_by_name(
    tmp_path: Path, body: dict[str, Any], name: str
) -> None:
    async def check(c: httpx.AsyncClient, seen: Seen, engine: FakeEngine) -> None:
        refused(await c.post("/api/chat", json={"model": "fake", "messages": HI, **body}), name)
        assert not seen.requests  # nothing reached the engine

    run(tmp_path, check)


@pytest.mark.parametrize(
    ("body", "name"),
    [
        ({"template": "{{ .Prompt }}"}, "template"),
        ({"context": [1, 2, 3]}, "context"),
        ({"images": ["aGk="]}, "images"),
        ({"suffix": "end"}, "suffix"),
        ({"raw": True, "system": "x"}, "system"),
        ({"raw": True, "format": "json"}, "format"),
    ],
)
def test_generate_refuses_what_it_cannot_honour_by_name(
    tmp_path: Path, body: dict[str, Any], name: str
) -> None:
    async def check(c: httpx.AsyncClient, seen: Seen, engine: FakeEngine) -> None:
        r = await c.post("/api/generate", json={"model": "fake", "prompt": "p", **body})
        refused(r, name)

    run(tmp_path, check)


def test_bad_bodies_and_unknown_models_answer_in_ollamas_shape(tmp_path: Path) -> None:
    async def check(c: httpx.AsyncClient, seen: Seen, engine: FakeEngine) -> None:
        r = await c.post("/api/chat", content=b"{not json", headers={"content-type": "x"})
        assert r.status_code == 400 and isinstance(r.json()["error"], str)
        r = await c.post("/api/chat", json={"messages": HI})
        assert r.status_code == 400 and "model" in r.json()["error"]
        r = await c.post("/api/chat", json={"model": "nope", "messages": HI})
        assert r.status_code == 404 and "nope" in r.json()["error"]
        r = await c.post("/api/show", json={"model": "nope"})
        assert r.status_code == 404 and set(r.json()) == {"error"}
        r = await c.post("/api/embed", json={"model": "fake", "input": "x"})  # a chat model
        assert r.status_code == 404 and set(r.json()) == {"error"}
        r = await c.post("/api/embed", json={"model": "all-minilm-l6-v2", "input": []})
        assert r.status_code == 400 and "input" in r.json()["error"]
        r = await c.post("/api/pull", json={"model": "llama3.2"})  # Ollama's registry
        assert r.status_code == 400 and "hf.co/OWNER/REPO" in r.json()["error"]
        assert "input" in (await c.post("/api/embed", json={"model": "x"})).json()["error"]

    run(tmp_path, check)


def test_embed_and_the_older_embeddings_route_give_the_bundled_models_vectors(
    tmp_path: Path,
) -> None:
    async def check(c: httpx.AsyncClient, seen: Seen, engine: FakeEngine) -> None:
        import ollama

        texts = ["A cat sleeps.", "A kitten naps.", "Bond yields rose."]
        r = await c.post("/api/embed", json={"model": "all-minilm-l6-v2", "input": texts})
        assert r.status_code == 200, r.text
        got = ollama.EmbedResponse.model_validate(r.json())  # what the ollama client reads
        v = np.array(got.embeddings)
        assert v.shape == (3, 384) and got.prompt_eval_count and got.prompt_eval_count > 9
        assert (v @ v.T)[0, 1] > (v @ v.T)[0, 2]
        long = {"model": "all-minilm-l6-v2", "input": "word " * 400}
        assert (await c.post("/api/embed", json=long)).status_code == 200  # cut, as Ollama
        r = await c.post("/api/embed", json={**long, "truncate": False})
        assert r.status_code == 400 and set(r.json()) == {"error"}
        r = await c.post("/api/embeddings", json={"model": "all-minilm-l6-v2", "prompt": texts[0]})
        assert np.allclose(r.json()["embedding"], v[0], atol=1e-6)

    run(tmp_path, check)


def test_format_json_and_schema_constrain_the_answer(tmp_path: Path) -> None:
    async def check(c: httpx.AsyncClient, seen: Seen, engine: FakeEngine) -> None:
        schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
        for fmt, expected in (("json", {"type": "object"}), (schema, schema)):
            r = await c.post(
                "/api/chat",
                json={"model": "fake", "messages": HI, "format": fmt, "stream": False},
            )
            assert json.loads(r.json()["message"]["content"]) == {"a": 1}
            assert seen.last.constraint is not None
            assert seen.last.constraint.schema == expected

    run(tmp_path, check)


def test_tool_calls_go_out_whole_with_object_arguments(tmp_path: Path) -> None:
    async def check(c: httpx.AsyncClient, seen: Seen, engine: FakeEngine) -> None:
        body = {"model": "fake", "messages": HI, "tools": [ADD]}
        *pieces, call, last = lines(await c.post("/api/chat", json=body))
        assert all(not p["message"].get("tool_calls") for p in pieces)
        (tc,) = call["message"]["tool_calls"]
        assert tc["function"]["name"] == "add" and tc["function"]["arguments"] == {"a": 1, "b": 2}
        assert call["done"] is False
        assert last["done"] is True and last["done_reason"] == "stop"
        forced = {**body, "options": {"tool_choice": "add"}, "stream": False}
        assert (await c.post("/api/chat", json=forced)).json()["message"]["tool_calls"]
        assert seen.last.constraint is not None and seen.last.constraint.kind == "json"
        whole = (await c.post("/api/chat", json={**body, "stream": False})).json()
        (tc,) = whole["message"]["tool_calls"]
        assert tc["function"]["arguments"] == {"a": 1, "b": 2}

    run(tmp_path, check)


def test_tool_history_translates_back_to_calls_and_results(tmp_path: Path) -> None:
    async def check(c: httpx.AsyncClient, seen: Seen, engine: FakeEngine) -> None:
        history = [
            *HI,
            {"role": "assistant", "content": "",
             "tool_calls": [{"function": {"name": "add", "arguments": {"a": 1, "b": 2}}}]},
            {"role": "tool", "content": "3", "tool_name": "add"},
        ]  # fmt: skip
        r = await c.post("/api/chat", json={"model": "fake", "messages": history})
        assert r.status_code == 200, r.text
        texts = [m.content for m in seen.last.messages or []]
        assert CALL in texts and "<tool_response>\n3\n</tool_response>" in texts

    run(tmp_path, check)


def test_tags_show_ps_version_and_root(tmp_path: Path) -> None:
    async def check(c: httpx.AsyncClient, seen: Seen, engine: FakeEngine) -> None:
        (model,) = (await c.get("/api/tags")).json()["models"]
        assert model["name"] == model["model"] == "fake"
        assert {"modified_at", "size", "digest", "details"} <= set(model)
        assert len(model["digest"]) == 64
        assert set(model["details"]) >= {"format", "family", "parameter_size",
                                         "quantization_level"}  # fmt: skip
        shown = (await c.post("/api/show", json={"model": "fake"})).json()
        assert "tools" in shown["capabilities"]
        assert 4096 in shown["model_info"].values()  # the context it is served with
        assert (await c.post("/api/show", json={"name": "fake"})).status_code == 200
        (loaded,) = (await c.get("/api/ps")).json()["models"]
        assert loaded["name"] == "fake" and loaded["size_vram"] == 0 and loaded["expires_at"]
        assert (await c.get("/api/version")).json()["version"]
        root = await c.get("/")
        assert root.status_code == 200 and root.text == "Ollama is running"
        assert (await c.head("/")).status_code == 200

    run(tmp_path, check)


def test_keep_alive_sets_expiry_and_an_empty_prompt_loads_or_unloads(tmp_path: Path) -> None:
    async def check(c: httpx.AsyncClient, seen: Seen, engine: FakeEngine) -> None:
        r = await c.post(
            "/api/generate", json={"model": "fake", "prompt": "x", "keep_alive": "10m"}
        )
        assert r.status_code == 200
        (loaded,) = (await c.get("/api/ps")).json()["models"]
        assert loaded["expires_at"] != "9999-12-31T23:59:59Z"  # ten minutes, not for ever
        r = await c.post("/api/generate", json={"model": "fake", "keep_alive": 0})
        assert r.json()["done_reason"] == "unload" and engine.state == "unloaded"
        assert (await c.get("/api/ps")).json()["models"] == []
        r = await c.post("/api/chat", json={"model": "fake", "messages": [], "keep_alive": -1})
        assert r.json()["done_reason"] == "load"
        assert str(engine.state) == "ready"  # loaded again (mypy narrowed it above)
        (loaded,) = (await c.get("/api/ps")).json()["models"]
        assert loaded["expires_at"] == "9999-12-31T23:59:59Z"
        assert not seen.requests[1:]  # loading generated nothing

    run(tmp_path, check)


def test_with_keys_a_request_without_one_is_401_in_ollamas_shape(tmp_path: Path) -> None:
    async def check(c: httpx.AsyncClient, seen: Seen, engine: FakeEngine) -> None:
        assert (await c.post("/api/chat", json={"model": "fake", "messages": HI})).is_success
        bare = httpx.AsyncClient(transport=c._transport, base_url="http://127.0.0.1")
        r = await bare.post("/api/chat", json={"model": "fake", "messages": HI})
        assert r.status_code == 401 and set(r.json()) == {"error"}
        assert "API key" in r.json()["error"]

    run(tmp_path, check, key=True)
