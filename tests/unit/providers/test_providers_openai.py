"""OpenAI-compatible providers: preset translation, SSE reading, error translation, and calls
over real HTTP to the scriptable stub upstream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import aiohttp
import httpx
import pytest

from gateway_stubs import TOKENS, OpenAIStub, cut, echo_auth, hang, ok, status
from helpers import free_port
from ocak.config.gateway import ProviderConfig, Timeouts
from ocak.config.presets import PRESETS
from ocak.providers.base import Call, Http, UpstreamReply, UpstreamStream
from ocak.providers.errors import (
    LocalityUnverified,
    Secrets,
    UpstreamBroken,
    UpstreamRateLimited,
    UpstreamRefused,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnreachable,
    from_status,
    from_transport,
    retry_after,
)
from ocak.providers.openai_compat import OpenAICompatible, translate
from ocak.providers.sse import sse_events

KEY = "sk-test-provider-0123456789"
MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "hi", "name": "ayse"},
]


# -- translation ----------------------------------------------------------------------


def test_groq_drops_message_names_and_wants_max_completion_tokens() -> None:
    body = {"model": "m", "messages": MESSAGES, "max_tokens": 7, "user": "u1", "seed": 3}
    out = translate(body, PRESETS["groq"])
    assert all("name" not in m for m in out["messages"])
    assert out["max_completion_tokens"] == 7 and "max_tokens" not in out
    assert (out["user"], out["seed"]) == ("u1", 3)  # the rest unchanged
    assert body["messages"][1]["name"] == "ayse" and body["max_tokens"] == 7  # not mutated


def test_token_limits_are_spelt_as_each_api_wants() -> None:
    both = {"max_tokens": 50, "max_completion_tokens": 9}
    assert translate(both, PRESETS["deepinfra"]) == {"max_tokens": 9}  # the newer one wins
    assert translate({"max_completion_tokens": 9}, PRESETS["together"]) == {"max_tokens": 9}
    assert translate({"max_tokens": 9}, PRESETS["openai"]) == {"max_completion_tokens": 9}
    assert translate(both, PRESETS["openai"]) == {"max_completion_tokens": 9}
    assert translate(both, PRESETS["vllm"]) == both  # takes both
    assert translate(both, PRESETS["ocak"]) == both
    names = {"messages": MESSAGES}
    assert translate(names, PRESETS["openai"]) == names  # only Groq refuses `name`


def test_every_preset_has_a_base_url() -> None:
    assert set(PRESETS) == {
        "groq", "openai", "deepinfra", "together", "openrouter", "ollama", "vllm", "lmstudio",
        "ocak",
    }  # fmt: skip
    assert all((p.base_url or "").startswith("http") for p in PRESETS.values())


# -- SSE and errors ----------------------------------------------------------------------


async def _collect(pieces: list[bytes]) -> list[tuple[str, bytes]]:
    async def gen() -> AsyncIterator[bytes]:
        for p in pieces:
            yield p

    return [(e.event, e.data) async for e in sse_events(gen())]


def test_sse_events_split_anywhere_crlf_comments_and_multiline_data() -> None:
    body = (
        b': keep-alive\r\n\r\ndata: {"a": 1}\r\n\r\nevent: output\r\ndata: line one\r\n'
        b'data: line two\r\n\r\ndata: [DONE]\r\n\r\ndata: {"cut"'
    )
    expected = [("message", b'{"a": 1}'), ("output", b"line one\nline two"), ("message", b"[DONE]")]
    for size in (1, 2, 3, 7, len(body)):
        pieces = [body[i : i + size] for i in range(0, len(body), size)]
        assert asyncio.run(_collect(pieces)) == expected  # the cut event is never dispatched


def test_secrets_are_scrubbed_from_text_and_bytes() -> None:
    s = Secrets([KEY, "ab"])  # too short to be a credential: ignored
    assert s.scrub(f"bad key {KEY}!") == "bad key ***!"
    assert s.scrub_bytes(f'{{"k": "{KEY}"}}'.encode()) == b'{"k": "***"}'
    assert s.scrub("ab cd") == "ab cd"


def test_upstream_statuses_become_ocak_errors() -> None:
    s = Secrets([KEY])
    h = httpx.Headers({"retry-after": "3"})
    body = json.dumps({"error": {"message": f"Invalid API key {KEY}", "code": "bad"}}).encode()
    refused = from_status("groq", 401, body, h, s)
    assert isinstance(refused, UpstreamRefused) and refused.status == 502
    assert KEY not in refused.message and "groq" in refused.message
    limited = from_status("groq", 429, b"{}", h, s)
    assert isinstance(limited, UpstreamRateLimited) and limited.retry_after == 3
    assert isinstance(from_status("g", 503, b"oops", h, s), UpstreamBroken)
    bad = from_status("g", 400, b'{"error": {"message": "no", "param": "tools"}}', h, s)
    assert isinstance(bad, UpstreamRejected) and (bad.status, bad.param) == (400, "tools")
    assert from_status("g", 413, b"", h, s).status == 413
    replicate = from_status("r", 422, b'{"title": "Invalid", "detail": "input.x: bad"}', h, s)
    assert "input.x: bad" in replicate.message


def test_retry_after_reads_seconds_milliseconds_and_dates() -> None:
    assert retry_after(httpx.Headers({"retry-after": "2"})) == 2
    assert retry_after(httpx.Headers({"retry-after-ms": "1500"})) == 1.5
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    value = retry_after(httpx.Headers({"retry-after": later}))
    assert value is not None and 25 < value <= 30
    assert retry_after(httpx.Headers({"retry-after": "soon"})) is None


# -- over HTTP ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stub() -> Iterator[OpenAIStub]:
    s = OpenAIStub().start()
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def _reset(request: pytest.FixtureRequest) -> None:
    if "stub" in request.fixturenames:
        request.getfixturevalue("stub").reset()


def provider(url: str, preset: str = "groq", **config: Any) -> OpenAICompatible:
    cfg = ProviderConfig(type="openai", preset=preset, base_url=f"{url}/v1", **config)
    return OpenAICompatible("up", cfg, key=KEY, http=Http(), secrets=Secrets([KEY]))


def call(stream: bool, **payload: Any) -> Call:
    body = {"model": "alias", "messages": MESSAGES, **payload}
    return Call(body, "chat", stream, Timeouts(connect=2, first_token=2, total=10))


async def drain(p: OpenAICompatible, c: Call) -> tuple[Any, list[bytes]]:
    try:
        up = await p.send("m1", c)
        if isinstance(up, UpstreamReply):
            return up, []
        assert isinstance(up, UpstreamStream)
        return up, [chunk.raw async for chunk in up.chunks()]
    finally:
        await p.http.aclose()


async def verified(p: OpenAICompatible, c: Call) -> bool:
    try:
        return await p.verify_local("m1", c.timeouts)
    finally:
        await p.http.aclose()


def test_a_stream_arrives_chunk_for_chunk_with_usage_asked_for(stub: OpenAIStub) -> None:
    up, raws = asyncio.run(drain(provider(stub.url), call(True, max_tokens=5)))
    sent = stub.posts()[0]
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.body is not None
    assert sent.body["model"] == "m1" and sent.body["stream"] is True
    assert sent.body["stream_options"] == {"include_usage": True}
    assert sent.body["max_completion_tokens"] == 5 and "name" not in sent.body["messages"][1]
    assert raws == stub.stream_lines(sent.body, ok())  # the upstream's own bytes
    assert up.locality == "remote"


def test_a_whole_reply_is_the_upstreams_json(stub: OpenAIStub) -> None:
    up, _ = asyncio.run(drain(provider(stub.url), call(False)))
    assert isinstance(up, UpstreamReply)
    assert up.data["x_stub"] == {"unknown": True}
    assert up.data["choices"][0]["message"]["content"] == "".join(TOKENS)
    assert "stream_options" not in (stub.posts()[0].body or {})


def test_failures_are_ocak_errors(stub: OpenAIStub) -> None:
    stub.push(status(500), status(429, headers={"Retry-After": "4"}), hang(), cut(3))
    p = provider(stub.url)
    with pytest.raises(UpstreamBroken):
        asyncio.run(drain(p, call(False)))
    with pytest.raises(UpstreamRateLimited) as limited:
        asyncio.run(drain(provider(stub.url), call(False)))
    assert limited.value.retry_after == 4
    slow = call(True)
    slow.timeouts = Timeouts(connect=2, first_token=0.3, total=5)
    with pytest.raises(UpstreamTimeout):
        asyncio.run(drain(provider(stub.url), slow))

    async def cut_stream() -> list[bytes]:
        p = provider(stub.url)
        up = await p.send("m1", call(True))
        assert isinstance(up, UpstreamStream)
        got: list[bytes] = []
        try:
            async for chunk in up.chunks():
                got.append(chunk.raw)
        finally:
            await p.http.aclose()
        return got

    with pytest.raises(UpstreamBroken, match=r"broke off|mid-answer"):
        asyncio.run(cut_stream())


def test_an_unreachable_upstream(stub: OpenAIStub) -> None:
    with pytest.raises(UpstreamUnreachable):
        asyncio.run(drain(provider(f"http://127.0.0.1:{free_port()}"), call(False)))


def test_an_upstream_echoing_the_key_is_scrubbed(stub: OpenAIStub) -> None:
    stub.push(echo_auth(), status(401, body={"error": {"message": "x"}}))
    up, _ = asyncio.run(drain(provider(stub.url), call(False)))
    assert KEY not in up.raw.decode() and "***" in up.raw.decode()


def test_a_loopback_ocak_must_prove_it_is_local(stub: OpenAIStub) -> None:
    p = provider(stub.url, preset="ocak")
    assert p.locality == "verify"
    local = call(False)
    local.local_only = True
    with pytest.raises(LocalityUnverified):  # the stub says nothing about locality
        asyncio.run(drain(p, local))
    assert stub.posts()[0].headers["x-ocak-require-locality"] == "local"
    assert not asyncio.run(verified(provider(stub.url, preset="ocak"), local))
    stub.default = ok(locality="local")
    assert asyncio.run(verified(provider(stub.url, preset="ocak"), local))
    up, _ = asyncio.run(drain(provider(stub.url, preset="ocak"), local))
    assert up.locality == "local"
    assert provider(stub.url, preset="ollama").locality == "remote"  # loopback proves nothing
    assert provider(stub.url, preset="ollama", local=True).locality == "local"


def test_proxies_come_from_the_environment_but_never_for_loopback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("ALL_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "api.internal")
    remote = provider("https://api.groq.com/openai")
    assert remote.proxy == "http://proxy.example:3128"
    assert provider("https://api.internal").proxy is None  # NO_PROXY
    assert provider("http://127.0.0.1:9", preset="ocak").proxy is None  # loopback: never
    assert provider("http://localhost:9", preset="ollama").proxy is None


def test_a_missed_deadline_of_ours_says_what_it_waited_for_and_aiohttps_says_its_phase() -> None:
    ours = from_transport("groq", TimeoutError(), Secrets(), missed="sent no audio within 5s")
    assert isinstance(ours, UpstreamTimeout)
    assert ours.message == "provider 'groq' sent no audio within 5s"
    theirs = from_transport(
        "groq", aiohttp.ConnectionTimeoutError(), Secrets(), missed="sent no audio within 5s"
    )
    assert isinstance(theirs, UpstreamTimeout)
    assert theirs.message == "timed out connecting to provider 'groq'"
