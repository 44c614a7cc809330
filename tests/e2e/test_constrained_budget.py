"""Constrained answers finish within max_tokens on the real default model.

Before: a json_schema answer with an unbounded string at max_tokens 120 and
temperature 1 ended as a 400 output_truncated in 1 of 12 seeded tries. Now the
document is closed in time; only a budget no valid answer fits is refused, and
that before decoding.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import jsonschema
import openai
import pytest

from helpers import ServerProcess

pytestmark = pytest.mark.slow

STORY = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "story": {"type": "string"}},
    "required": ["title", "story"],
    "additionalProperties": False,
}
FORMAT: Any = {"type": "json_schema", "json_schema": {"name": "story", "schema": STORY}}
NOTE = {
    "type": "function",
    "function": {
        "name": "save_note",
        "description": "Save a note.",
        "parameters": {
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        },
    },
}
ASK = [{"role": "user", "content": "Write a long story about a dragon, as JSON."}]


def client(server: ServerProcess) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=300)


def test_a_dozen_sampled_answers_close_within_max_tokens(server: ServerProcess) -> None:
    async def main() -> list[Any]:
        async with client(server) as c:
            return list(
                await asyncio.gather(
                    *(
                        c.chat.completions.create(
                            model="default",
                            messages=ASK,  # type: ignore[arg-type]
                            response_format=FORMAT,
                            max_tokens=120,
                            temperature=1.0,
                            seed=seed,
                        )
                        for seed in range(12)
                    )
                )
            )

    answers = asyncio.run(main())
    for a in answers:
        assert a.usage is not None and a.usage.completion_tokens <= 120
        assert a.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(a.choices[0].message.content or ""), STORY)
    # Long answers use their budget rather than stopping short.
    assert max(a.usage.completion_tokens for a in answers if a.usage) >= 110


def test_a_tool_call_with_a_small_budget_is_complete(server: ServerProcess) -> None:
    async def main() -> list[Any]:
        async with client(server) as c:
            return [
                await c.chat.completions.create(
                    model="default",
                    messages=[{"role": "user", "content": "Save a long note about dragons."}],
                    tools=[NOTE],  # type: ignore[list-item]
                    tool_choice="required",
                    max_tokens=20,
                    temperature=1.0,
                    seed=seed,
                )
                for seed in range(3)
            ]

    for a in asyncio.run(main()):
        assert a.usage is not None and a.usage.completion_tokens <= 20
        assert a.choices[0].finish_reason == "tool_calls"
        calls = a.choices[0].message.tool_calls
        assert calls is not None and calls[0].function.name == "save_note"
        assert isinstance(json.loads(calls[0].function.arguments)["text"], str)


def test_a_budget_no_valid_answer_fits_is_a_400_before_decoding(server: ServerProcess) -> None:
    async def main() -> None:
        async with client(server) as c:
            await c.chat.completions.create(
                model="default",
                messages=ASK,  # type: ignore[arg-type]
                response_format=FORMAT,
                max_tokens=3,
            )

    with pytest.raises(openai.BadRequestError) as err:
        asyncio.run(main())
    body: Any = err.value.body
    assert body["param"] == "max_tokens" and body["code"] == "max_tokens_too_small"
    assert "at least" in body["message"]
