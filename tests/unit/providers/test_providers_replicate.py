"""The Replicate provider against a Replicate-shaped stub over real HTTP: create a prediction,
stream its output or poll it, read token counts from its metrics, cancel what nobody reads."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from gateway_stubs import ReplicateStub, cut, status
from helpers import wait_until
from ocak.config.gateway import ProviderConfig, Timeouts
from ocak.providers.base import Call, Http, UpstreamReply, UpstreamStream
from ocak.providers.errors import (
    Secrets,
    UpstreamBroken,
    UpstreamRateLimited,
    UpstreamRefused,
)
from ocak.providers.replicate import Replicate, replicate_input

KEY = "r8_test_0123456789abcdef"


@pytest.fixture(scope="module")
def stub() -> Iterator[ReplicateStub]:
    s = ReplicateStub().start()
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def _reset(stub: ReplicateStub) -> None:
    stub.reset()


def provider(stub: ReplicateStub) -> Replicate:
    cfg = ProviderConfig(type="replicate", base_url=f"{stub.url}/v1")
    return Replicate("rep", cfg, key=KEY, http=Http(), secrets=Secrets([KEY]))


def call(stream: bool, endpoint: str = "chat", **payload: Any) -> Call:
    if endpoint == "chat":
        body: dict[str, Any] = {
            "messages": [
                {"role": "system", "content": "Be kind."},
                {"role": "user", "content": "Selam"},
            ],
            **payload,
        }
    else:
        body = {"prompt": "Once", **payload}
    return Call(body, endpoint, stream, Timeouts(connect=2, first_token=5, total=10))  # type: ignore[arg-type]


async def run(stub: ReplicateStub, c: Call, model: str = "meta/llama-3") -> tuple[Any, list[Any]]:
    p = provider(stub)
    try:
        up = await p.send(model, c)
        if isinstance(up, UpstreamReply):
            return up, []
        assert isinstance(up, UpstreamStream)
        return up, [chunk.data async for chunk in up.chunks()]
    finally:
        await p.http.aclose()


def test_inputs_from_openai_parameters() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "S"},
            {"role": "user", "content": [{"type": "text", "text": "Q1"}]},
            {"role": "assistant", "content": "A1"},
            {"role": "user", "content": "Q2"},
        ],
        "max_completion_tokens": 20,
        "temperature": 0.5,
        "stop": ["\n\n", "END"],
        "input": {"top_k": 40},
    }
    got = replicate_input(body, "chat")
    assert got == {
        "prompt": "user: Q1\nassistant: A1\nuser: Q2\nassistant:",
        "system_prompt": "S",
        "max_tokens": 20,
        "temperature": 0.5,
        "stop_sequences": "\n\n,END",
        "top_k": 40,
    }
    assert replicate_input({"prompt": ["P"], "max_tokens": 3}, "completions") == {
        "prompt": "P",
        "max_tokens": 3,
    }


def test_a_streamed_prediction_becomes_openai_chunks_with_usage(stub: ReplicateStub) -> None:
    _, chunks = asyncio.run(run(stub, call(True, max_tokens=12)))
    create = stub.posts()[0]
    assert create.path == "/v1/models/meta/llama-3/predictions"
    assert create.headers["authorization"] == f"Bearer {KEY}"
    assert create.body == {
        "input": {"prompt": "Selam", "system_prompt": "Be kind.", "max_tokens": 12},
        "stream": True,
    }
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "".join(stub.tokens)  # multi-line output events included
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)


def test_a_whole_answer_waits_for_the_prediction(stub: ReplicateStub) -> None:
    up, _ = asyncio.run(run(stub, call(False)))
    assert isinstance(up, UpstreamReply)
    assert up.data["choices"][0]["message"]["content"] == "".join(stub.tokens)
    assert up.data["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
    assert stub.posts()[0].headers["prefer"].startswith("wait")


def test_a_versioned_model_and_the_completions_endpoint(stub: ReplicateStub) -> None:
    up, _ = asyncio.run(run(stub, call(False, "completions"), model="owner/m:abc123"))
    create = stub.posts()[0]
    assert create.path == "/v1/predictions"
    assert create.body is not None and create.body["version"] == "abc123"
    assert up.data["object"] == "text_completion"
    assert up.data["choices"][0]["text"] == "".join(stub.tokens)


def test_failures_and_refusals(stub: ReplicateStub) -> None:
    stub.push(status(429, body={"detail": "slow down"}, headers={"Retry-After": "2"}))
    with pytest.raises(UpstreamRateLimited) as info:
        asyncio.run(run(stub, call(False)))
    assert info.value.retry_after == 2
    stub.push(status(401, body={"detail": f"bad token {KEY}"}))
    with pytest.raises(UpstreamRefused) as refused:
        asyncio.run(run(stub, call(False)))
    assert KEY not in refused.value.message
    stub.fail_next = True
    with pytest.raises(UpstreamBroken, match="ran out of memory"):
        asyncio.run(run(stub, call(True)))


def test_a_stream_cut_mid_way_raises_and_cancels_the_prediction(stub: ReplicateStub) -> None:
    stub.push(cut(2))
    with pytest.raises(UpstreamBroken):
        asyncio.run(run(stub, call(True)))
    assert wait_until(lambda: any(r.path.endswith("/cancel") for r in stub.received), 5)


def test_tools_are_not_taken() -> None:
    p = Replicate(
        "rep",
        ProviderConfig(type="replicate"),
        key=None,
        http=Http(),
        secrets=Secrets(),
    )
    assert p.unsupported(call(False, tools=[{"type": "function"}])) is not None
    assert p.unsupported(call(False)) is None
