"""Anthropic's Messages API in-process on the scripted fake engine: blocks and tools
translated onto ocak's request and back, stop reasons, the SSE event sequence, refusals
by name and error bodies in Anthropic's shape (the real ``anthropic`` SDK raising its own
exception classes), keys sent as ``x-api-key``, and token counting.

tests/e2e/test_anthropic_sdk.py checks the same routes with the SDK on the real default
model.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2  # the anthropic SDK's own HTTP package
import pytest

from app_helpers import served
from helpers import ADD_PARAMETERS
from ocak.engines.fake import FakeEngine, echo
from ocak.errors import Unavailable
from ocak.protocol.anthropic import MessagesRequest
from ocak.protocol.generation import GenerationEvent, GenerationRequest, TextDelta

CALL = '<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>'
ADD: Any = {"name": "add", "description": "Add two integers.", "input_schema": ADD_PARAMETERS}
HI: Any = [{"role": "user", "content": "hi there"}]


class Seen:
    """The fake engine's script: records each request; calls a tool when the answer is
    constrained to one, else echoes."""

    def __init__(self) -> None:
        self.requests: list[GenerationRequest] = []

    def __call__(self, request: GenerationRequest) -> str:
        self.requests.append(request)
        constraint = request.constraint
        if constraint is not None and constraint.param == "tools":
            # A required call is the bare JSON; an optional one comes in its tags.
            return CALL if constraint.kind == "lark" else CALL[11:-12]
        return echo(request)

    @property
    def last(self) -> GenerationRequest:
        return self.requests[-1]


class BreaksMidway(FakeEngine):
    """Sends one word, then fails as an engine can after its first token."""

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        yield TextDelta("Hello")
        raise Unavailable("the engine went away")


class App:
    def __init__(self, http: httpx.AsyncClient, seen: Seen, sdk: anthropic.AsyncAnthropic):
        self.http, self.seen, self.sdk = http, seen, sdk


Check = Callable[[App], Awaitable[None]]


def run(tmp_path: Path, check: Check, *, key: bool = False) -> None:
    async def main() -> None:
        seen = Seen()
        engines = [FakeEngine("fake", script=seen, context_length=4096), BreaksMidway("broken")]
        async with served(tmp_path, engines, key=key) as s:
            token = s.token or "none"
            http = s.client  # the key as the SDK sends it: x-api-key, not a bearer token
            http.headers.pop("Authorization", None)
            http.headers.update({"x-api-key": token, "anthropic-version": "2023-06-01"})
            async with httpx2.AsyncClient(
                transport=httpx2.ASGITransport(app=s.app), base_url="http://127.0.0.1"
            ) as raw:
                sdk = anthropic.AsyncAnthropic(
                    base_url="http://127.0.0.1", api_key=token, http_client=raw, max_retries=0
                )
                await check(App(http, seen, sdk))

    asyncio.run(main())


def body(**more: Any) -> dict[str, Any]:
    return {"model": "fake", "max_tokens": 50, "messages": HI, **more}


def refused(r: httpx.Response, name: str, status: int = 400) -> str:
    """An error in Anthropic's shape whose message names ``name``."""
    assert r.status_code == status, r.text
    got = r.json()
    assert got["type"] == "error" and set(got["error"]) == {"type", "message"}, got
    assert got["error"]["type"] == "invalid_request_error"
    assert f"'{name}'" in got["error"]["message"], got
    return str(got["error"]["message"])


def sse(r: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of each SSE event; checks each names its own type."""
    assert r.headers["content-type"].startswith("text/event-stream")
    out = []
    for frame in r.text.strip().split("\n\n"):
        head, data = frame.split("\n")
        name = head.removeprefix("event: ")
        payload = json.loads(data.removeprefix("data: "))
        assert payload["type"] == name
        out.append((name, payload))
    return out


def test_a_message_comes_back_in_anthropics_shape_with_usage(tmp_path: Path) -> None:
    async def check(app: App) -> None:
        r = await app.http.post("/v1/messages", json=body())
        assert r.status_code == 200, r.text
        assert r.headers["x-ocak-locality"] == "local"
        got = r.json()
        assert got["id"].startswith("msg_") and got["type"] == "message"
        assert got["role"] == "assistant" and got["model"] == "fake"
        assert got["content"] == [{"type": "text", "text": "You said: hi there"}]
        assert got["stop_reason"] == "end_turn" and got["stop_sequence"] is None
        # The fake engine counts a message's words plus 4, and one token a word it says.
        assert got["usage"] == {"input_tokens": 6, "output_tokens": 4}

        reply = await app.sdk.messages.create(model="fake", max_tokens=50, messages=HI)
        assert reply.content[0].type == "text" and reply.content[0].text == "You said: hi there"
        assert reply.usage.input_tokens == 6 and reply.usage.output_tokens == 4

    run(tmp_path, check)


def test_system_blocks_and_a_tool_round_trip_reach_the_engine_as_ocak_messages(
    tmp_path: Path,
) -> None:
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "add 1 and 2"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Adding."},
                {"type": "tool_use", "id": "toolu_1", "name": "add", "input": {"a": 1, "b": 2}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "3"},
                {"type": "text", "text": "and now?", "cache_control": {"type": "ephemeral"}},
            ],
        },
    ]
    system = [{"type": "text", "text": "Be brief."}, {"type": "text", "text": " Be kind."}]

    async def check(app: App) -> None:
        r = await app.http.post(
            "/v1/messages", json=body(system=system, messages=messages, tools=[ADD])
        )
        assert r.status_code == 200, r.text
        sent = app.seen.last.messages
        assert sent is not None
        assert sent[0].role == "system" and sent[0].content.startswith("Be brief. Be kind.")
        assert "add" in sent[0].content  # the tool's definition, in the instructions
        assert [m.role for m in sent[1:]] == ["user", "assistant", "user", "user"]
        call = sent[2].content
        assert call.startswith("Adding.<tool_call>")
        assert json.loads(call.split("<tool_call>")[1].split("</tool_call>")[0]) == {
            "name": "add",
            "arguments": {"a": 1, "b": 2},
        }
        assert sent[3].content == "<tool_response>\n3\n</tool_response>"
        assert sent[4].content == "and now?"

        # An error result is marked as one; its content may be text blocks.
        failed = [
            *messages[:2],
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": [{"type": "text", "text": "overflow"}],
                        "is_error": True,
                    }
                ],
            },
        ]
        r = await app.http.post("/v1/messages", json=body(messages=failed, tools=[ADD]))
        assert r.status_code == 200, r.text
        assert app.seen.last.messages is not None
        assert "Error: overflow" in app.seen.last.messages[-1].content

    run(tmp_path, check)


def test_sampling_fields_map_onto_ocaks_names() -> None:
    data = MessagesRequest.model_validate(
        body(
            temperature=0.3,
            top_p=0.9,
            top_k=20,
            stop_sequences=["END"],
            metadata={"user_id": "player-7"},
            service_tier="auto",
            thinking={"type": "disabled"},
        )
    ).openai()
    assert data["temperature"] == 0.3 and data["top_p"] == 0.9 and data["top_k"] == 20
    assert data["stop"] == ["END"] and data["max_tokens"] == 50 and data["user"] == "player-7"
    assert "thinking" not in data and "service_tier" not in data


def test_output_config_format_is_a_json_schema_constraint_and_effort_has_no_effect(
    tmp_path: Path,
) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    fmt = {"type": "json_schema", "schema": schema}
    data = MessagesRequest.model_validate(
        body(output_config={"format": fmt, "effort": "low"})
    ).openai()
    assert data["response_format"]["json_schema"]["schema"] == schema
    assert "effort" not in json.dumps(data)

    async def check(app: App) -> None:
        r = await app.http.post("/v1/messages", json=body(output_config={"format": fmt}))
        assert r.status_code == 200, r.text
        constraint = app.seen.last.constraint
        assert constraint is not None and constraint.param == "response_format"

    run(tmp_path, check)


def test_a_forced_tool_call_comes_back_as_a_tool_use_block_with_an_object_input(
    tmp_path: Path,
) -> None:
    async def check(app: App) -> None:
        choice: Any = {"type": "tool", "name": "add"}
        r = await app.http.post(
            "/v1/messages", json=body(max_tokens=200, tools=[ADD], tool_choice=choice)
        )
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["stop_reason"] == "tool_use"
        (block,) = got["content"]
        assert block["type"] == "tool_use" and block["name"] == "add"
        assert block["id"].startswith("toolu_") and block["input"] == {"a": 1, "b": 2}

        # `any` must call some tool; `none` and `auto` leave the answer free.
        await app.http.post(
            "/v1/messages", json=body(max_tokens=200, tools=[ADD], tool_choice={"type": "any"})
        )
        constraint = app.seen.last.constraint
        assert constraint is not None and constraint.kind == "json"  # the call, whole
        r = await app.http.post(
            "/v1/messages", json=body(tools=[ADD], tool_choice={"type": "none"})
        )
        assert app.seen.last.constraint is None
        assert r.json()["content"][0]["type"] == "text"

        reply = await app.sdk.messages.create(
            model="fake",
            max_tokens=200,
            messages=HI,
            tools=[ADD],
            tool_choice=choice,
        )
        assert reply.stop_reason == "tool_use"
        assert reply.content[0].type == "tool_use" and reply.content[0].input == {"a": 1, "b": 2}

    run(tmp_path, check)


def test_max_tokens_and_stop_sequences_end_the_answer(tmp_path: Path) -> None:
    async def check(app: App) -> None:
        r = await app.http.post("/v1/messages", json=body(max_tokens=2))
        assert r.json()["stop_reason"] == "max_tokens"
        assert r.json()["content"][0]["text"] == "You said:"
        r = await app.http.post("/v1/messages", json=body(stop_sequences=["zz", "hi"]))
        assert r.json()["content"][0]["text"] == "You said: "
        assert r.json()["stop_reason"] == "stop_sequence" and r.json()["stop_sequence"] == "hi"
        r = await app.http.post("/v1/messages", json=body(stop_sequences=["hi"], stream=True))
        delta = sse(r)[-2][1]
        assert delta["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "hi"}

    run(tmp_path, check)


def test_a_stream_has_anthropics_event_types_in_order(tmp_path: Path) -> None:
    async def check(app: App) -> None:
        r = await app.http.post("/v1/messages", json=body(stream=True))
        assert r.status_code == 200, r.text
        events = sse(r)
        names = [n for n, _ in events]
        assert names[:3] == ["message_start", "ping", "content_block_start"]
        assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
        assert set(names[3:-3]) == {"content_block_delta"}
        start = events[0][1]["message"]
        assert start["id"].startswith("msg_") and start["content"] == []
        assert events[2][1] == {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "text", "text": ""},
        }
        text = "".join(p["delta"]["text"] for n, p in events if n == "content_block_delta")
        assert text == "You said: hi there"
        delta = events[-2][1]
        assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
        assert delta["usage"] == {"input_tokens": 6, "output_tokens": 4}

        async with app.sdk.messages.stream(model="fake", max_tokens=50, messages=HI) as s:
            pieces = [t async for t in s.text_stream]
            final = await s.get_final_message()
        assert "".join(pieces) == "You said: hi there"
        assert final.stop_reason == "end_turn" and final.usage.output_tokens == 4

    run(tmp_path, check)


def test_a_streamed_tool_call_is_a_tool_use_block_with_input_json_deltas(tmp_path: Path) -> None:
    async def check(app: App) -> None:
        choice: Any = {"type": "tool", "name": "add"}
        r = await app.http.post(
            "/v1/messages", json=body(max_tokens=200, tools=[ADD], tool_choice=choice, stream=True)
        )
        events = sse(r)
        (start,) = [p for n, p in events if n == "content_block_start"]
        block = start["content_block"]
        assert block["type"] == "tool_use" and block["name"] == "add" and block["input"] == {}
        parts = [p["delta"] for n, p in events if n == "content_block_delta"]
        assert all(d["type"] == "input_json_delta" for d in parts)
        assert json.loads("".join(d["partial_json"] for d in parts)) == {"a": 1, "b": 2}
        assert events[-2][1]["delta"]["stop_reason"] == "tool_use"

        async with app.sdk.messages.stream(
            model="fake",
            max_tokens=200,
            messages=HI,
            tools=[ADD],
            tool_choice=choice,
        ) as s:
            final = await s.get_final_message()
        assert final.content[0].type == "tool_use" and final.content[0].input == {"a": 1, "b": 2}

    run(tmp_path, check)


def test_a_failure_mid_stream_is_an_error_event(tmp_path: Path) -> None:
    async def check(app: App) -> None:
        r = await app.http.post("/v1/messages", json=body(model="broken", stream=True))
        events = sse(r)
        assert events[-1] == (
            "error",
            {
                "type": "error",
                "error": {"type": "overloaded_error", "message": "the engine went away"},
            },
        )
        with pytest.raises(anthropic.APIStatusError):
            async with app.sdk.messages.stream(model="broken", max_tokens=5, messages=HI) as s:
                async for _ in s:
                    pass

    run(tmp_path, check)


@pytest.mark.parametrize(
    ("extra", "name"),
    [
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "what is this?"},
                            {
                                "type": "image",
                                "source": {"type": "base64", "media_type": "image/png", "data": ""},
                            },
                        ],
                    }
                ]
            },
            "messages.[0].content.[1]",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "document", "source": {"type": "text", "data": "x"}},
                        ],
                    }
                ]
            },
            "messages.[0].content.[0]",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": "t",
                                "content": [{"type": "image", "source": {}}],
                            }
                        ],
                    }
                ]
            },
            "messages.[0].content.[0].content.[0]",
        ),
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.[0].type"),
        ({"messages": [*HI, {"role": "assistant", "content": "{"}]}, "messages.[1]"),
        ({"mcp_servers": [{"type": "url", "url": "http://x", "name": "x"}]}, "mcp_servers"),
        (
            {"output_config": {"task_budget": {"type": "tokens", "total": 9}}},
            "output_config.task_budget",
        ),
        ({"system": [{"type": "image", "source": {}}]}, "system.[0]"),
        ({"tool_choice": {"type": "tool"}, "tools": [ADD]}, "tool_choice.name"),
        ({"tool_choice": {"type": "tool", "name": "sub"}, "tools": [ADD]}, "sub"),
    ],
)
def test_what_ocak_cannot_honour_is_refused_by_name(
    tmp_path: Path, extra: dict[str, Any], name: str
) -> None:
    async def check(app: App) -> None:
        refused(await app.http.post("/v1/messages", json=body(**extra)), name)

    run(tmp_path, check)


def test_bad_bodies_are_400s_naming_the_field_never_500s(tmp_path: Path) -> None:
    async def check(app: App) -> None:
        no_max = {"model": "fake", "messages": HI}
        refused(await app.http.post("/v1/messages", json=no_max), "max_tokens")
        refused(await app.http.post("/v1/messages", json=body(temperature=1.5)), "temperature")
        system_turn = [{"role": "system", "content": "x"}]
        refused(
            await app.http.post("/v1/messages", json=body(messages=system_turn)),
            "messages.[0].role",
        )
        blockless = [{"role": "assistant", "content": [{"type": "tool_use", "name": "add"}]}, *HI]
        refused(
            await app.http.post("/v1/messages", json=body(messages=blockless)),
            "messages.[0].content.[0].id",
        )
        r = await app.http.post(
            "/v1/messages", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert r.status_code == 400 and r.json()["type"] == "error"

        with pytest.raises(anthropic.BadRequestError):
            await app.sdk.messages.create(
                model="fake", max_tokens=5, messages=HI, extra_body={"temperature": 3}
            )
        with pytest.raises(anthropic.NotFoundError):
            await app.sdk.messages.create(model="nope", max_tokens=5, messages=HI)

    run(tmp_path, check)


def test_the_key_is_taken_from_x_api_key(tmp_path: Path) -> None:
    async def check(app: App) -> None:
        reply = await app.sdk.messages.create(model="fake", max_tokens=5, messages=HI)
        assert reply.content[0].type == "text"
        wrong = app.sdk.with_options(api_key="ocak-wrong")
        with pytest.raises(anthropic.AuthenticationError) as info:
            await wrong.messages.create(model="fake", max_tokens=5, messages=HI)
        assert info.value.body == {
            "type": "error",
            "error": {"type": "authentication_error", "message": "Incorrect API key provided."},
        }

    run(tmp_path, check, key=True)


def test_count_tokens_counts_the_prompt_the_engine_is_given(tmp_path: Path) -> None:
    async def check(app: App) -> None:
        short = await app.sdk.messages.count_tokens(model="fake", messages=HI)
        longer = await app.sdk.messages.count_tokens(
            model="fake",
            messages=HI,
            system="You are a helpful, terse assistant.",
        )
        assert short.input_tokens == 2  # the fake engine counts words
        assert longer.input_tokens == short.input_tokens + 6
        tooled = await app.sdk.messages.count_tokens(model="fake", messages=HI, tools=[ADD])
        assert tooled.input_tokens > short.input_tokens  # the tools' instructions count
        with pytest.raises(anthropic.NotFoundError):
            await app.sdk.messages.count_tokens(model="nope", messages=HI)
        refused(
            await app.http.post(
                "/v1/messages/count_tokens", json={"model": "fake", "messages": []}
            ),
            "messages",
        )

    run(tmp_path, check)
