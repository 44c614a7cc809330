"""Training files are checked line by line: a good file gives its examples, and each kind of
mistake is refused with a message and a ``param`` naming the line and the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ocak.errors import InvalidRequest, PayloadTooLarge
from ocak.tuning.data import parse_training_data, read_training_file


def jsonl(*lines: Any) -> bytes:
    return "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines).encode()


def chat(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"messages": list(messages), **extra}


USER = {"role": "user", "content": "Hi"}
ANSWER = {"role": "assistant", "content": "Hello. By the old oak!"}
GOOD = chat({"role": "system", "content": "Be brief."}, USER, ANSWER)


def error_of(data: bytes, **limits: int) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        parse_training_data(data, **limits)
    return caught.value


def test_a_good_file_gives_its_examples_with_what_is_learnt() -> None:
    tool_call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'},
    }
    multi = chat(
        USER,
        {"role": "assistant", "content": "Not this one.", "weight": 0},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Add "}, {"type": "text", "text": "1+2"}],
        },
        {"role": "assistant", "content": None, "tool_calls": [tool_call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "3"},
        {"role": "assistant", "content": "3"},
        tools=[{"type": "function", "function": {"name": "add"}}],
        parallel_tool_calls=False,
    )
    data = parse_training_data(jsonl(GOOD, "", multi) + b"\n\n")
    assert [e.line for e in data.examples] == [1, 3]  # blank lines are skipped, not renumbered
    first, second = data.examples
    assert [m.role for m in first.messages] == ["system", "user", "assistant"]
    assert first.learn == (False, False, True)
    assert second.learn == (False, False, False, True, False, True)
    assert second.messages[2].content == "Add 1+2"
    assert second.messages[3].tool_calls == [tool_call]
    assert second.tools is not None and second.tools[0]["function"]["name"] == "add"
    assert data.stats == {"examples": 2, "messages": 9, "learnt_messages": 3}


@pytest.mark.parametrize(
    ("line", "param", "words"),
    [
        ("{not json", "line 2", "not valid JSON"),
        ("[1, 2]", "line 2", "JSON object"),
        ({"prompt": "a", "completion": "b"}, "line 2: messages", "prompt/completion"),
        ({"messages": []}, "line 2: messages", "non-empty list"),
        (chat(USER, ANSWER, extra=1), "line 2: extra", "unknown field"),
        (chat({"content": "x"}, ANSWER), "line 2: messages[0].role", "missing"),
        (chat({"role": "robot", "content": "x"}, ANSWER), "line 2: messages[0].role", "robot"),
        (chat(USER, {"role": "assistant", "contnt": "x"}), "line 2: messages[1].contnt", "unknown"),
        (chat(USER, {"role": "assistant"}), "line 2: messages[1].content", "no content"),
        (chat(USER, {"role": "assistant", "content": 5}), "line 2: messages[1].content", "string"),
        (chat({"role": "user", "content": "  "}, ANSWER), "line 2: messages[0].content", "empty"),
        (chat(USER), "line 2: messages", "no assistant message"),
        (
            chat(USER, {**ANSWER, "weight": 0}),
            "line 2: messages",
            "weight 0",
        ),
        (chat({**USER, "weight": 1}, ANSWER), "line 2: messages[0].weight", "assistant"),
        (chat(USER, {**ANSWER, "weight": 0.5}), "line 2: messages[1].weight", "0 or 1"),
        (
            chat({"role": "user", "content": [{"type": "image_url", "image_url": {}}]}, ANSWER),
            "line 2: messages[0].content[0].type",
            "only text",
        ),
        (
            chat(USER, ANSWER, {"role": "tool", "content": "3"}, ANSWER),
            "line 2: messages[2].tool_call_id",
            "tool_call_id",
        ),
        (
            chat(
                USER,
                {
                    "role": "assistant",
                    "tool_calls": [{"function": {"name": "f", "arguments": "{x"}}],
                },
            ),
            "line 2: messages[1].tool_calls[0].function.arguments",
            "not valid JSON",
        ),
        (
            chat(USER, {**USER, "tool_calls": []}, ANSWER),
            "line 2: messages[1].tool_calls",
            "assistant",
        ),
        (chat(USER, ANSWER, tools={"a": 1}), "line 2: tools", "list"),
    ],
)
def test_each_mistake_names_its_line_and_field(line: Any, param: str, words: str) -> None:
    error = error_of(jsonl(GOOD, line, GOOD))
    assert error.param == param
    assert words in error.message and "Line 2" in error.message


def test_bytes_that_are_not_utf8_name_the_line() -> None:
    error = error_of(jsonl(GOOD) + b'{"messages": "\xff"}\n')
    assert error.param == "line 2" and "UTF-8" in error.message


def test_size_bounds(tmp_path: Path) -> None:
    with pytest.raises(PayloadTooLarge, match="at most 100 are accepted"):
        parse_training_data(jsonl(GOOD, GOOD), max_bytes=100)
    assert "more than 1 examples" in error_of(jsonl(GOOD, GOOD), max_examples=1).message
    assert error_of(b"\n \n").param == "file"  # no example at all
    assert "at least 10" in error_of(jsonl(GOOD), min_examples=10).message
    path = tmp_path / "train.jsonl"
    path.write_bytes(jsonl(GOOD, GOOD))
    with pytest.raises(PayloadTooLarge):
        read_training_file(path, max_bytes=100)
    assert len(read_training_file(path).examples) == 2
    with pytest.raises(InvalidRequest, match="cannot be read"):
        read_training_file(tmp_path / "missing.jsonl")
