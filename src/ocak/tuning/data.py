"""Training data: chat-format JSONL as OpenAI's fine-tuning API takes it, checked line by line.

Each non-blank line is one example, a JSON object::

    {"messages": [{"role": "system", "content": "..."},
                  {"role": "user", "content": "..."},
                  {"role": "assistant", "content": "...", "weight": 1}],
     "tools": [...], "parallel_tool_calls": true}

Roles are ``system``, ``user``, ``assistant`` and ``tool``; ``content`` is a string or a
list of ``{"type": "text", "text": ...}`` parts (images are refused); an assistant
message may carry ``tool_calls`` instead of content and ``weight`` 0 (shown to the model,
not learnt) or 1; a tool message answers a ``tool_call_id``. Every example needs an
assistant message to learn (weight 1). The first problem found is raised as an
``InvalidRequest`` whose ``param`` names the line and the field
(``line 3: messages[1].role``), so an upload can be refused with a message a user can act on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ocak.errors import InvalidRequest, PayloadTooLarge
from ocak.protocol.generation import Message

ROLES = ("system", "user", "assistant", "tool")
MAX_FILE_BYTES = 512 * 2**20  # OpenAI's limit for a fine-tuning file
MAX_LINE_BYTES = 4 * 2**20
MAX_EXAMPLES = 100_000
MAX_MESSAGES = 512
_MESSAGE_KEYS = {"role", "content", "name", "weight", "tool_calls", "tool_call_id", "refusal"}
_LINE_KEYS = {"messages", "tools", "parallel_tool_calls"}


@dataclass(frozen=True, slots=True)
class Example:
    """One training conversation: its messages, which assistant turns are learnt, its tools."""

    line: int
    messages: tuple[Message, ...]
    learn: tuple[bool, ...]  # per message: an assistant turn with weight 1
    tools: tuple[dict[str, Any], ...] | None = None


@dataclass(frozen=True, slots=True)
class TrainingData:
    """The examples of a file and what a files API reports of it."""

    examples: tuple[Example, ...]
    lines: int
    size_bytes: int
    stats: dict[str, int] = field(default_factory=dict)


def _fail(line: int, where: str, message: str) -> InvalidRequest:
    param = f"line {line}: {where}" if where else f"line {line}"
    return InvalidRequest(f"Line {line} of the training file: {message}", param=param)


def _text(value: Any, line: int, where: str) -> str:
    """A message's content as text: a string, or a list of text parts."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for i, part in enumerate(value):
            at = f"{where}[{i}]"
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise _fail(line, at, "a content part must be an object with a 'type'")
            if part["type"] != "text":
                raise _fail(line, f"{at}.type", f"'{part['type']}' parts cannot be trained on "
                            "here (only text)")  # fmt: skip
            if not isinstance(part.get("text"), str):
                raise _fail(line, f"{at}.text", "a text part needs a string 'text'")
            parts.append(part["text"])
        return "".join(parts)
    raise _fail(line, where, "content must be a string or a list of text parts")


def _tool_calls(value: Any, line: int, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise _fail(line, where, "tool_calls must be a non-empty list")
    for i, call in enumerate(value):
        at = f"{where}[{i}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict):
            raise _fail(line, f"{at}.function", "a tool call needs a 'function' object")
        if not isinstance(fn.get("name"), str) or not fn["name"]:
            raise _fail(line, f"{at}.function.name", "a tool call needs a function name")
        if not isinstance(fn.get("arguments"), str):
            raise _fail(line, f"{at}.function.arguments", "arguments must be a JSON string")
        try:
            json.loads(fn["arguments"])
        except ValueError:
            raise _fail(line, f"{at}.function.arguments", "arguments are not valid JSON") from None
    return [dict(c) for c in value]


def _message(raw: Any, line: int, i: int) -> tuple[Message, bool]:
    where = f"messages[{i}]"
    if not isinstance(raw, dict):
        raise _fail(line, where, "each message must be a JSON object")
    unknown = sorted(set(raw) - _MESSAGE_KEYS)
    if unknown:
        raise _fail(line, f"{where}.{unknown[0]}", f"unknown message field '{unknown[0]}'")
    role = raw.get("role")
    if role not in ROLES:
        shown = json.dumps(role)[:40] if role is not None else "missing"
        raise _fail(line, f"{where}.role", f"role is {shown}: use one of {', '.join(ROLES)}")
    weight = raw.get("weight", 1)
    if "weight" in raw and (
        role != "assistant" or isinstance(weight, bool) or weight not in (0, 1)
    ):
        raise _fail(line, f"{where}.weight", "weight is 0 or 1, on assistant messages only")
    calls = None
    if raw.get("tool_calls") is not None:
        if role != "assistant":
            raise _fail(line, f"{where}.tool_calls", "only assistant messages make tool calls")
        calls = _tool_calls(raw["tool_calls"], line, f"{where}.tool_calls")
    content = raw.get("content")
    if content is None:
        if calls is None:
            raise _fail(line, f"{where}.content", "the message has no content")
        content = ""
    text = _text(content, line, f"{where}.content")
    if role != "assistant" and not text.strip() and role != "tool":
        raise _fail(line, f"{where}.content", "the content is empty")
    call_id = raw.get("tool_call_id")
    if role == "tool" and not isinstance(call_id, str):
        raise _fail(line, f"{where}.tool_call_id", "a tool message needs a tool_call_id string")
    name = raw.get("name")
    if name is not None and not isinstance(name, str):
        raise _fail(line, f"{where}.name", "name must be a string")
    message = Message(role=str(role), content=text, name=name, tool_calls=calls,
                      tool_call_id=call_id if role == "tool" else None)  # fmt: skip
    learn = role == "assistant" and weight == 1 and (bool(text) or calls is not None)
    return message, learn


def parse_line(text: str, line: int) -> Example:
    """One JSONL line as an ``Example``; an ``InvalidRequest`` naming the field if it is not."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise _fail(line, "", f"not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise _fail(line, "", "each line must be a JSON object with 'messages'")
    if "messages" not in raw:
        hint = " (the legacy prompt/completion format is not supported)" if "prompt" in raw else ""
        raise _fail(line, "messages", f"the line has no 'messages' list{hint}")
    unknown = sorted(set(raw) - _LINE_KEYS)
    if unknown:
        raise _fail(line, unknown[0], f"unknown field '{unknown[0]}'")
    messages = raw["messages"]
    if not isinstance(messages, list) or not messages:
        raise _fail(line, "messages", "messages must be a non-empty list")
    if len(messages) > MAX_MESSAGES:
        raise _fail(line, "messages", f"more than {MAX_MESSAGES} messages")
    parsed = [_message(m, line, i) for i, m in enumerate(messages)]
    if not any(m.role == "assistant" for m, _ in parsed):
        raise _fail(line, "messages", "the example has no assistant message to learn from")
    if not any(learn for _, learn in parsed):
        raise _fail(line, "messages", "every assistant message has weight 0: nothing to learn")
    tools = raw.get("tools")
    if tools is not None and (
        not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools)
    ):
        raise _fail(line, "tools", "tools must be a list of tool objects")
    if "parallel_tool_calls" in raw and not isinstance(raw["parallel_tool_calls"], bool):
        raise _fail(line, "parallel_tool_calls", "parallel_tool_calls must be true or false")
    return Example(
        line=line,
        messages=tuple(m for m, _ in parsed),
        learn=tuple(learn for _, learn in parsed),
        tools=tuple(tools) if tools else None,
    )


def parse_training_data(
    data: bytes,
    *,
    max_bytes: int = MAX_FILE_BYTES,
    max_examples: int = MAX_EXAMPLES,
    min_examples: int = 1,
) -> TrainingData:
    """Check a whole JSONL file (bytes as uploaded); raise on its first problem."""
    if len(data) > max_bytes:
        raise PayloadTooLarge(
            f"The training file is {len(data)} bytes; at most {max_bytes} are accepted.",
            param="file",
        )
    examples: list[Example] = []
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for n, raw in enumerate(lines, start=1):
        if len(raw) > MAX_LINE_BYTES:
            raise _fail(n, "", f"the line is longer than {MAX_LINE_BYTES} bytes")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _fail(n, "", f"not UTF-8 text (byte {exc.start})") from None
        if not text.strip():
            continue
        if len(examples) >= max_examples:
            raise _fail(n, "", f"the file has more than {max_examples} examples")
        examples.append(parse_line(text.lstrip("\ufeff"), n))
    if len(examples) < min_examples:
        raise InvalidRequest(
            f"The training file has {len(examples)} examples; at least {min_examples} are needed.",
            param="file",
        )
    stats = {
        "examples": len(examples),
        "messages": sum(len(e.messages) for e in examples),
        "learnt_messages": sum(sum(e.learn) for e in examples),
    }
    return TrainingData(tuple(examples), len(lines), len(data), stats)


def read_training_file(path: Path, **limits: int) -> TrainingData:
    """``parse_training_data`` of a file on disk (``limits``: its keyword bounds)."""
    try:
        size = path.stat().st_size
        max_bytes = limits.get("max_bytes", MAX_FILE_BYTES)
        if size > max_bytes:
            raise PayloadTooLarge(
                f"The training file is {size} bytes; at most {max_bytes} are accepted.",
                param="file",
            )
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidRequest(f"The training file cannot be read: {exc}", param="file") from None
    return parse_training_data(data, **limits)
