"""KoboldCpp's API in-process on the scripted fake engine: the translation of its sampler
fields onto ocak's request, neutral-only fields accepted at their neutral value and refused
by name otherwise (in KoboldCpp's error shape), the SSE framing, check and abort by genkey,
token counts, and the info routes SillyTavern reads.

tests/e2e/test_kobold_clients.py checks the same routes with ``koboldapi`` and with
SillyTavern- and CHIM-shaped bodies on the real default model.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from app_helpers import served
from ocak.engines.fake import FakeEngine, echo
from ocak.protocol.generation import GenerationRequest

LONG = " ".join(f"w{i}" for i in range(400))


class Seen:
    """The fake engine's script: records each request; a long text for prompts saying
    'long', else an echo."""

    def __init__(self) -> None:
        self.requests: list[GenerationRequest] = []

    def __call__(self, request: GenerationRequest) -> str:
        self.requests.append(request)
        return LONG if "long" in (request.prompt or "") else echo(request)

    @property
    def last(self) -> GenerationRequest:
        return self.requests[-1]


Check = Callable[[httpx.AsyncClient, Seen, FakeEngine], Awaitable[None]]


def run(tmp_path: Path, check: Check, *, key: bool = False, delay: float = 0.0) -> None:
    async def main() -> None:
        seen = Seen()
        engine = FakeEngine("fake", script=seen, context_length=4096, delay=delay)
        async with served(tmp_path, [engine], key=key) as s:
            await check(s.client, seen, engine)

    asyncio.run(main())


def refused(r: httpx.Response, name: str) -> None:
    """A 400 in KoboldCpp's ``{"detail": {"msg", "type"}}`` shape naming ``name``."""
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert f"'{name}'" in detail["msg"] or detail.get("param") == name, detail
    assert isinstance(detail["type"], str)


def events(text: str) -> list[dict[str, Any]]:
    """KoboldCpp's SSE: ``event: message`` then ``data: {...}`` for every frame."""
    frames = [f for f in text.split("\n\n") if f]
    out = []
    for frame in frames:
        head, data = frame.split("\n")
        assert head == "event: message"
        assert data.startswith("data: ")
        out.append(json.loads(data[len("data: ") :]))
    return out


# SillyTavern's Kobold body (public/scripts/kai-settings.js, getKoboldGenerationData, in
# SillyTavern/SillyTavern), with its default preset's values: the samplers ocak lacks are
# at their neutral values.
SILLYTAVERN = {
    "prompt": "You are Seraphina.\nUser: hello\nSeraphina:",
    "gui_settings": False,
    "sampler_order": [6, 0, 1, 3, 4, 2, 5],
    "max_context_length": 2048,
    "max_length": 40,
    "rep_pen": 1.1,
    "rep_pen_range": 600,
    "rep_pen_slope": 1,
    "temperature": 0.7,
    "tfs": 1,
    "top_a": 0,
    "top_k": 40,
    "top_p": 0.9,
    "min_p": 0.05,
    "typical": 1,
    "use_world_info": False,
    "singleline": False,
    "stop_sequence": ["\nUser:", "\nSeraphina:"],
    "streaming": False,
    "can_abort": False,
    "mirostat": 0,
    "mirostat_tau": 5,
    "mirostat_eta": 0.1,
    "use_default_badwordsids": False,
    "grammar": "",
    "sampler_seed": 7,
}


def test_sillytavern_body_maps_samplers_onto_ocak_names(tmp_path: Path) -> None:
    async def check(c: httpx.AsyncClient, seen: Seen, engine: FakeEngine) -> None:
        r = await c.post("/api/v1/generate", json=SILLYTAVERN)
        assert r.status_code == 200, r.text
        result = r.json()["results"][0]
        assert result["text"].startswith("You are Seraphina.")
        assert result["finish_reason"] in ("stop", "length")
        req = seen.last
        assert req.prompt == SILLYTAVERN["prompt"] and req.max_tokens == 40
        assert (req.temperature, req.top_p, req.top_k, req.min_p) == (0.7, 0.9, 40, 0.05)
        assert (req.repeat_penalty, req.repeat_last_n, req.seed) == (1.1, 600, 7)
        assert req.stop == ["\nUser:", "\nSeraphina:"]
        assert req.constraint is None  # an empty grammar is none

    run(tmp_path, check)


def test_memory_goes_before_the_prompt_and_singleline_stops_at_a_newline(
    tmp_path: Path,
) -> None:
    async def check(c: httpx.AsyncClient, seen: Seen, engine: FakeEngine) -> None:
        body = {"prompt": "Hi.", "memory": "[Lore] ", "singleline": True, "max_length": 5}
        r = await c.post("/api/v1/generate", json=body)
        assert r.status_code == 200, r.text
        assert seen.last.prompt == "[Lore] Hi." and seen.last.stop == ["\n"]
        await c.post("/api/v1/generate", json={"prompt": "x", "sampler_seed": -1})
        assert seen.last.seed is None and seen.last.max_tokens == 100  # KoboldCpp's default

    run(tmp_path, check)


def test_samplers_ocak_lacks_are_refused_by_name_unless_neutral(tmp_path: Path) -> None:
    async def check(c: httpx.AsyncClient, seen: Seen, engine: FakeEngine) -> None:
        for name, value in [
            ("dry_multiplier", 0.8),
            ("xtc_probability", 0.5),
            ("mirostat", 2),
            ("typical", 0.9),
            ("tfs", 0.95),
            ("top_a", 0.2),
            ("smoothing_factor", 0.3),
            ("use_default_badwordsids", True),
            ("banned_tokens", ["bad"]),
            ("n", 2),
        ]:
            r = await c.post("/api/v1/generate", json={"prompt": "hi", name: value})
            refused(r, name)
        neutral = {"dry_multiplier": 0, "xtc_probability": 0, "smoothing_factor": 0,
                   "banned_tokens": [], "trim_stop": True, "n": 1, "dry_base": 1.75}  # fmt: skip
        r = await c.post("/api/v1/generate", json={"prompt": "hi", **neutral})
        assert r.status_code == 200, r.text

    run(tmp_path, check)


def test_bad_values_are_400s_in_kobold_shape(tmp_path: Path) -> None:
    async def check(c: httpx.AsyncClient, seen: Seen, engine: FakeEngine) -> None:
        refused(await c.post("/api/v1/generate", json={"prompt": "hi", "max_length": 0}),
                "max_length")  # fmt: skip
        refused(await c.post("/api/v1/generate", json={"prompt": "hi", "temperature": "hot"}),
                "temperature")  # fmt: skip
        refused(await c.post("/api/v1/generate", json={"prompt": ""}), "prompt")
        r = await c.post("/api/v1/generate", json={"prompt": "hi", "grammar": "root ::= ("})
        refused(r, "grammar")
        r = await c.post("/api/v1/generate", content=b"{not json")
        assert r.status_code == 400 and "detail" in r.json()

    run(tmp_path, check)


def test_a_gbnf_grammar_becomes_a_lark_constraint(tmp_path: Path) -> None:
    async def check(c: httpx.AsyncClient, seen: Seen, engine: FakeEngine) -> None:
        body = {"prompt": "Answer:", "grammar": 'root ::= "yes" | "no"'}
        r = await c.post("/api/v1/generate", json=body)
        assert r.status_code == 200, r.text
        constraint = seen.last.constraint
        assert constraint is not None and constraint.kind == "lark"
        assert constraint.param == "grammar" and '"yes"' in (constraint.grammar or "")

    run(tmp_path, check)


def test_max_context_length_below_the_window_is_enforced_not_cut(tmp_path: Path) -> None:
    async def check(c: httpx.AsyncClient, seen: Seen, engine: FakeEngine) -> None:
        prompt = " ".join(["word"] * 30)  # 30 tokens on the fake tokenizer
        body = {"prompt": prompt, "max_length": 10, "max_context_length": 32}
        refused(await c.post("/api/v1/generate", json=body), "max_context_length")
        body["max_context_length"] = 40
        assert (await c.post("/api/v1/generate", json=body)).status_code == 200

    run(tmp_path, check)


def test_stream_frames_as_koboldcpp_writes_them(tmp_path: Path) -> None:
    async def check(c: httpx.AsyncClient, seen: Seen, engine: FakeEngine) -> None:
        for path in ("/api/extra/generate/stream", "/api/extra/generate/stream/"):  # CHIM's
            r = await c.post(path, json={"prompt": "one two three", "max_length": 50})
            assert r.status_code == 200, r.text
            assert r.headers["content-type"].startswith("text/event-stream")
            frames = events(r.text)
            assert "".join(f["token"] for f in frames) == "one two three"
            assert all(f["finish_reason"] is None for f in frames[:-1])
            assert frames[-1] == {"token": "", "finish_reason": "stop"}

    run(tmp_path, check)


def test_the_stop_sequence_is_trimmed_unless_trim_stop_is_false(tmp_path: Path) -> None:
    async def check(c: httpx.AsyncClient, seen: Seen, engine: FakeEngine) -> None:
        body: dict[str, Any] = {"prompt": "one two three", "stop_sequence": ["two"]}
        r = await c.post("/api/v1/generate", json=body)
        assert r.json()["results"][0]["text"] == "one "
        r = await c.post("/api/v1/generate", json={**body, "trim_stop": False})
        assert r.json()["results"][0]["text"] == "one two"
        r = await c.post("/api/extra/generate/stream", json={**body, "trim_stop": False})
        frames = events(r.text)
        assert "".join(f["token"] for f in frames) == "one two"
        assert frames[-1] == {"token": "", "finish_reason": "stop"}

    run(tmp_path, check)


def test_check_and_abort_by_genkey_stop_the_engine(tmp_path: Path) -> None:
    async def check(c: httpx.AsyncClient, seen: Seen, engine: FakeEngine) -> None:
        body = {"prompt": "long", "max_length": 400, "genkey": "KCPP1234"}
        task = asyncio.ensure_future(c.post("/api/v1/generate", json=body))
        text = ""
        for _ in range(200):
            await asyncio.sleep(0.02)
            r = await c.post("/api/extra/generate/check", json={"genkey": "KCPP1234"})
            text = r.json()["results"][0]["text"]
            if len(text.split()) >= 3:
                break
        assert text.startswith("w0 w1 w2")
        other = await c.post("/api/extra/generate/check", json={"genkey": "KCPPnone"})
        assert other.json() == {"results": [{"text": ""}]}
        assert engine.active == 1
        r = await c.post("/api/extra/abort", json={"genkey": "KCPP1234"})
        assert r.json() == {"success": "true", "done": "true"}
        answer = (await task).json()["results"][0]
        assert answer["finish_reason"] == "stop"
        assert answer["text"].startswith(text) and len(answer["text"].split()) < 400
        for _ in range(50):
            if engine.active == 0:
                break
            await asyncio.sleep(0.01)
        assert engine.active == 0 and engine.cancelled == 1
        r = await c.post("/api/extra/abort", json={"genkey": "KCPP1234"})
        assert r.json()["success"] == "false"  # nothing runs under it any more

    run(tmp_path, check, delay=0.01)


def test_a_genkey_is_only_the_callers(tmp_path: Path) -> None:
    async def check(c: httpx.AsyncClient, seen: Seen, engine: FakeEngine) -> None:
        task = asyncio.ensure_future(
            c.post("/api/v1/generate", json={"prompt": "long", "genkey": "KCPPk"})
        )
        await asyncio.sleep(0.1)
        stranger = httpx.AsyncClient(transport=c._transport, base_url="http://127.0.0.1")
        r = await stranger.post("/api/extra/abort", json={"genkey": "KCPPk"})
        assert r.status_code == 401  # keys are on: no key, no abort
        await c.post("/api/extra/abort", json={"genkey": "KCPPk"})
        assert (await task).status_code == 200

    run(tmp_path, check, key=True, delay=0.01)


def test_tokencount_uses_the_models_tokenizer(tmp_path: Path) -> None:
    async def check(c: httpx.AsyncClient, seen: Seen, engine: FakeEngine) -> None:
        r = await c.post("/api/extra/tokencount", json={"prompt": "a b a c"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["value"] == 4 == len(body["ids"]) and body["ids"][0] == body["ids"][2]
        r = await c.post("/api/extra/detokenize", json={"ids": body["ids"]})
        assert r.json()["result"] == "a b a c"
        refused(await c.post("/api/extra/detokenize", json={"ids": [999]}), "tokens.[0]")
        r = await c.post("/api/extra/tokencount", json={"prompt": "x", "model": "nope"})
        assert r.status_code == 404 and "detail" in r.json()

    run(tmp_path, check)


def test_info_routes_sillytavern_reads(tmp_path: Path) -> None:
    async def check(c: httpx.AsyncClient, seen: Seen, engine: FakeEngine) -> None:
        assert (await c.get("/api/v1/model")).json() == {"result": "koboldcpp/fake"}
        assert (await c.get("/api/v1/info/version")).json() == {"result": "1.2.5"}
        version = (await c.get("/api/extra/version")).json()
        assert version["result"] == "KoboldCpp" and version["version"] == "1.48"
        assert (await c.get("/api/v1/config/max_context_length")).json() == {"value": 4096}
        assert (await c.get("/api/extra/true_max_context_length")).json() == {"value": 4096}
        assert (await c.get("/api/v1/config/max_length")).json() == {"value": 100}

    run(tmp_path, check)
