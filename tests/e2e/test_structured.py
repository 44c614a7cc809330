"""Tool calls and structured output on the real default model, by constrained decoding."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from helpers import ADD_TOOL, ServerProcess

# Non-trivial (nesting, enum, bounds, pattern, array, optional keys) yet short to write.
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 16},
        "age": {"type": "integer", "minimum": 0, "maximum": 130},
        "role": {"enum": ["admin", "editor", "viewer"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 2},
        "address": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 12},
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
            },
            "required": ["city", "zip"],
            "additionalProperties": False,
        },
        "active": {"type": "boolean"},
    },
    "required": ["name", "age", "role", "address", "active"],
    "additionalProperties": False,
}

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
ADD = ADD_TOOL
TOOLS = [WEATHER, ADD]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "What is the weather like in Istanbul today?"}]


def aclient(server: ServerProcess) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=600)


def test_fifty_sampled_answers_all_validate_against_the_schema(server: ServerProcess) -> None:
    async def main() -> list[Any]:
        async with aclient(server) as client:
            sem = asyncio.Semaphore(16)

            async def one(i: int) -> Any:
                async with sem:
                    r = await client.chat.completions.create(
                        model="default",
                        messages=[{"role": "user", "content": f"Invent user number {i} as JSON."}],
                        response_format={
                            "type": "json_schema",
                            "json_schema": {"name": "person", "schema": PERSON},
                        },
                        temperature=1.0,
                        seed=i,
                        max_tokens=300,
                    )
                    assert r.choices[0].finish_reason == "stop"
                    return json.loads(r.choices[0].message.content or "")

            return await asyncio.gather(*(one(i) for i in range(50)))

    answers = asyncio.run(main())
    for answer in answers:
        jsonschema.validate(answer, PERSON)
    assert len({json.dumps(a, sort_keys=True) for a in answers}) > 10  # really sampled


def test_json_object_mode_parses_or_says_it_was_cut(server: ServerProcess) -> None:
    """Every answer is a JSON object, or a visible output_truncated error: never broken JSON."""

    async def main() -> list[Any]:
        async with aclient(server) as client:

            async def one(seed: int) -> Any:
                try:
                    r = await client.chat.completions.create(
                        model="default",
                        messages=[{"role": "user", "content": "Describe a cat as JSON."}],
                        response_format={"type": "json_object"},
                        temperature=1.0,
                        seed=seed,
                        max_tokens=200,
                    )
                except openai.BadRequestError as exc:
                    assert exc.code == "output_truncated"
                    return None
                assert r.choices[0].finish_reason == "stop"
                return json.loads(r.choices[0].message.content or "")

            return await asyncio.gather(*(one(seed) for seed in range(6)))

    answers = asyncio.run(main())
    parsed = [a for a in answers if a is not None]
    assert len(parsed) >= 3
    assert all(isinstance(a, dict) for a in parsed)


@pytest.mark.parametrize(
    "choice",
    ["required", {"type": "function", "function": {"name": "add"}}],
    ids=["required", "named"],
)
def test_required_and_named_tool_choice_always_yield_a_valid_call(
    server: ServerProcess, choice: Any
) -> None:
    async def main() -> list[Any]:
        async with aclient(server) as client:
            return await asyncio.gather(
                *(
                    client.chat.completions.create(
                        model="default",
                        messages=ASK,  # type: ignore[arg-type]
                        tools=TOOLS,  # type: ignore[arg-type]
                        tool_choice=choice,
                        temperature=1.0,
                        seed=seed,
                        max_tokens=200,
                    )
                    for seed in range(8)
                )
            )

    for r in asyncio.run(main()):
        choice0 = r.choices[0]
        assert choice0.finish_reason == "tool_calls"
        (call,) = choice0.message.tool_calls
        assert call.id.startswith("call_")
        assert call.type == "function"
        if isinstance(choice, dict):
            assert call.function.name == "add"
        assert call.function.name in SCHEMAS
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def _stream_call(client: openai.OpenAI, **kw: Any) -> tuple[str, dict[int, dict[str, str]], str]:
    content, calls, finish = "", {}, ""
    for chunk in client.chat.completions.create(stream=True, **kw):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for tc in delta.tool_calls or []:
            entry = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
            if tc.id:
                entry["id"] = tc.id
            if tc.function and tc.function.name:
                entry["name"] = tc.function.name
            if tc.function and tc.function.arguments:
                entry["arguments"] += tc.function.arguments
        finish = chunk.choices[0].finish_reason or finish
    return content, calls, finish


@pytest.mark.parametrize("choice", ["required", "auto"])
def test_streaming_and_non_streaming_tool_answers_agree(client: openai.OpenAI, choice: str) -> None:
    kw: dict[str, Any] = {
        "model": "default",
        "messages": ASK,
        "tools": TOOLS,
        "tool_choice": choice,
        "temperature": 0,
        "max_tokens": 120,
    }
    whole = client.chat.completions.create(**kw)
    content, calls, finish = _stream_call(client, **kw)
    assert finish == whole.choices[0].finish_reason
    message = whole.choices[0].message
    if message.tool_calls:
        assert content == ""
        assert [(c["name"], c["arguments"]) for c in calls.values()] == [
            (t.function.name, t.function.arguments) for t in message.tool_calls
        ]
        assert all(c["id"].startswith("call_") for c in calls.values())
    else:
        assert calls == {}
        assert content == message.content


def test_streaming_json_schema_answer_matches_non_streaming(client: openai.OpenAI) -> None:
    kw: dict[str, Any] = {
        "model": "default",
        "messages": [{"role": "user", "content": "Invent a user as JSON."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}},
        "temperature": 0,
        "max_tokens": 300,
    }
    whole = client.chat.completions.create(**kw).choices[0].message.content
    content, calls, finish = _stream_call(client, **kw)
    assert finish == "stop"
    assert calls == {}
    assert content == whole
    jsonschema.validate(json.loads(content), PERSON)


def test_tool_history_is_accepted_and_answered(client: openai.OpenAI) -> None:
    history: list[Any] = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Istanbul"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 24 degrees celsius."},
    ]
    r = client.chat.completions.create(
        model="default", messages=history, tools=TOOLS, tool_choice="none", max_tokens=40
    )
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.choices[0].message.content
    assert not r.choices[0].message.tool_calls


def test_a_call_that_cannot_fit_max_tokens_is_refused_not_broken(server: ServerProcess) -> None:
    """No tool call fits in 4 tokens: a 400 naming max_tokens before decoding, not half a call."""
    r = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={
            "model": "default",
            "messages": ASK,
            "tools": TOOLS,
            "tool_choice": "required",
            "max_tokens": 4,
        },
        timeout=120,
    )
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "max_tokens_too_small"
    assert err["param"] == "max_tokens"
    assert "at least" in err["message"]


@pytest.mark.parametrize(
    ("extra", "param", "words"),
    [
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "x",
                        "schema": {"type": "object", "if": {"required": ["a"]}},
                    },
                }
            },
            "response_format",
            "if",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "x",
                        "schema": {"type": "string", "format": "credit-card"},
                    },
                }
            },
            "response_format",
            "credit-card",
        ),
        ({"response_format": {"type": "xml"}}, "response_format.type", "xml"),
        ({"tools": [{"type": "retrieval"}]}, "tools.[0].type", "function"),
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
            "nope",
        ),
        ({"tool_choice": "required"}, "tool_choice", "tools"),
    ],
)
def test_unsupported_or_bad_structure_requests_are_400_naming_it(
    server: ServerProcess, extra: dict[str, Any], param: str, words: str
) -> None:
    r = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": "default", "messages": ASK, **extra},
        timeout=60,
    )
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param
    assert words in err["message"]
