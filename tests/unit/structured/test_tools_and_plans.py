"""Tool parsing, the tool-call stream, and the chat planner, as pure logic (no model).

The stream is fed the text a constrained model writes, cut at every possible
place, since an engine's text deltas can end anywhere.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ocak.errors import InvalidRequest
from ocak.protocol.generation import (
    Finished,
    GenerationEvent,
    GenerationRequest,
    Message,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from ocak.protocol.openai import ChatCompletionRequest
from ocak.structured.chat import plan_body, plan_chat, response_constraint
from ocak.structured.tools import (
    OutputTruncated,
    ToolCallStream,
    json_events,
    parse_tools,
)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
DONE = Finished("stop", Usage(5, 9))


def run(stream: ToolCallStream, pieces: list[str], end: Finished = DONE) -> list[GenerationEvent]:
    events: list[GenerationEvent] = []
    for piece in pieces:
        events += stream.feed(piece)
    return events + stream.finish(end)


def cuts(text: str) -> list[list[str]]:
    """The text in two pieces, at every place, and one character at a time."""
    return [[text[:i], text[i:]] for i in range(1, len(text))] + [list(text)]


def calls(events: list[GenerationEvent]) -> tuple[str | None, str]:
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    return (deltas[0].name if deltas else None), "".join(d.arguments for d in deltas)


def test_tools_are_validated_with_the_parameter_named() -> None:
    cases: list[tuple[Any, Any, str]] = [
        ([{"type": "retrieval"}], None, "tools.[0].type"),
        ([{"type": "function", "function": {}}], None, "tools.[0].function.name"),
        ([{"type": "function", "function": {"name": "a b"}}], None, "tools.[0].function.name"),
        ([WEATHER, WEATHER], None, "tools"),
        ([WEATHER], {"type": "function", "function": {"name": "nope"}}, "tool_choice"),
        ([WEATHER], "sometimes", "tool_choice"),
        (None, "required", "tool_choice"),
    ]
    for tools, choice, param in cases:
        with pytest.raises(InvalidRequest) as info:
            parse_tools(tools, choice)
        assert info.value.param == param, (tools, choice)


def test_tool_choice_picks_the_mode_and_the_tools() -> None:
    other = {"type": "function", "function": {"name": "other"}}
    assert parse_tools([WEATHER], None)[1] == "auto"
    assert parse_tools([WEATHER], "none")[1] is None
    assert parse_tools([WEATHER], "required")[1] == "required"
    named, mode = parse_tools([WEATHER, other], {"type": "function", "function": {"name": "other"}})
    assert [t.name for t in named] == ["other"] and mode == "required"
    (tool,), _ = parse_tools([other], None)
    assert tool.parameters["properties"] == {}  # no parameters: an empty object


def test_a_required_call_streams_its_arguments_wherever_the_text_is_cut() -> None:
    text = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
    for pieces in cuts(text):
        events = run(ToolCallStream("required"), pieces)
        assert calls(events) == ("get_weather", '{"city": "Paris"}'), pieces
        assert isinstance(events[-1], Finished) and events[-1].reason == "tool_calls"
        assert events[-1].usage == DONE.usage
        assert not [e for e in events if isinstance(e, TextDelta)]


def test_auto_mode_tells_text_from_a_call_wherever_the_text_is_cut() -> None:
    call = '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
    for pieces in cuts(call):
        assert calls(run(ToolCallStream("auto"), pieces)) == ("get_weather", '{"city": "Oslo"}')
    for pieces in cuts("<b>It is sunny.</b>"):
        events = run(ToolCallStream("auto"), pieces)
        text = "".join(e.text for e in events if isinstance(e, TextDelta))
        assert text == "<b>It is sunny.</b>" and calls(events) == (None, "")
        assert isinstance(events[-1], Finished) and events[-1].reason == "stop"
    short = run(ToolCallStream("auto"), ["<to"])  # ended while it only looked like a call
    assert [e.text for e in short if isinstance(e, TextDelta)] == ["<to"]


def test_a_call_cut_by_max_tokens_is_an_error_not_half_a_call() -> None:
    stream = ToolCallStream("required")
    stream.feed('{"name": "get_weather", "arguments": {"ci')
    with pytest.raises(OutputTruncated) as info:
        stream.finish(Finished("length", Usage(5, 16)))
    assert info.value.param == "max_tokens"


def test_a_json_answer_cut_by_max_tokens_is_an_error() -> None:
    async def events() -> AsyncIterator[GenerationEvent]:
        yield TextDelta('{"a": ')
        yield Finished("length", Usage(1, 2))

    async def drain() -> None:
        async for _ in json_events(events()):
            pass

    with pytest.raises(OutputTruncated):
        asyncio.run(drain())


def chat(**fields: Any) -> ChatCompletionRequest:
    base: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    return ChatCompletionRequest.model_validate({**base, **fields})


def test_the_planner_adds_tool_instructions_and_a_grammar() -> None:
    plan = plan_body(chat(tools=[WEATHER], tool_choice="required"))
    messages = plan.request.messages or []
    assert messages[0].role == "system" and "get_weather" in messages[0].content
    assert "Answer only with a tool call" in messages[0].content
    assert plan.request.constraint is not None and plan.request.constraint.kind == "json"
    auto = plan_body(chat(tools=[WEATHER], messages=[{"role": "system", "content": "Be brief."},
                                                  {"role": "user", "content": "hi"}]))  # fmt: skip
    first = (auto.request.messages or [])[0]
    assert first.content.startswith("Be brief.") and "<tool_call>" in first.content
    assert auto.request.constraint is not None and auto.request.constraint.kind == "lark"


def test_the_planner_folds_response_format_in_and_refuses_two_constraints() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    plan = plan_body(chat(response_format=fmt))
    assert plan.request.constraint is not None and plan.request.constraint.kind == "json"
    assert plan.wrap is json_events
    assert plan_body(chat()).request.constraint is None
    with pytest.raises(InvalidRequest) as info:
        plan_body(chat(tools=[WEATHER], tool_choice="required",
                       response_format={"type": "json_object"}))  # fmt: skip
    assert info.value.param == "response_format"
    with pytest.raises(InvalidRequest) as bad:
        response_constraint({"type": "yaml"})
    assert bad.value.param == "response_format.type"


def test_tool_history_is_rendered_for_templates_without_tool_support() -> None:
    request = GenerationRequest(
        model="m",
        messages=[
            Message("user", "weather?"),
            Message(
                "assistant",
                "",
                tool_calls=[
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {
                            "name": "get_weather",
                            "arguments": json.dumps({"city": "Rome"}),
                        },
                    }
                ],
            ),
            Message("tool", "18 C", tool_call_id="c1"),
        ],
    )
    plan = plan_chat(request, tools=[WEATHER])
    rendered = "\n".join(m.content for m in plan.request.messages or [])
    assert "get_weather" in rendered and "Rome" in rendered and "18 C" in rendered
    assert all(m.role != "tool" for m in plan.request.messages or [])
