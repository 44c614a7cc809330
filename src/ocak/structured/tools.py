"""Tool calls and JSON answers on local engines, by constrained decoding.

A request with ``tools`` becomes a prompt that lists the tools and a grammar
that lets the model write only a well-formed call: a name that is one of the
declared tools, and arguments valid against that tool's schema. With
``tool_choice`` ``required`` or a named function the whole answer is a call;
with ``auto`` the model may answer in text or call a tool (``<tool_call>...``).

The model writes ``{"name": "NAME", "arguments": {...}}``; ``ToolCallStream``
turns that text into OpenAI tool-call deltas as it is generated.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from ocak.errors import InvalidRequest
from ocak.protocol.generation import (
    Constraint,
    Finished,
    GenerationEvent,
    Message,
    TextDelta,
    ToolCallDelta,
)
from ocak.structured.grammar import JSON_OPTIONS, bound_strings, compile_constraint

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_HEAD = re.compile(r'^\{"name": "([A-Za-z0-9_-]+)", "arguments": ')


class OutputTruncated(InvalidRequest):
    """The answer hit max_tokens before its structure was complete."""

    code = "output_truncated"

    def __init__(self, what: str) -> None:
        super().__init__(
            f"max_tokens was reached before the {what} was complete; raise max_tokens.",
            param="max_tokens",
        )


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]

    def describe(self) -> str:
        return json.dumps(
            {"name": self.name, "description": self.description, "parameters": self.parameters},
            ensure_ascii=False,
        )

    def call_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {"name": {"const": self.name}, "arguments": self.parameters},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }


Mode = Literal["auto", "required"]


def parse_tools(tools: Any, tool_choice: Any) -> tuple[list[Tool], Mode | None]:
    """Validate OpenAI ``tools``/``tool_choice``; returns the tools offered and the mode.

    ``None`` as mode means no tool may be called (``tool_choice: none``).
    """
    if tools is None or tools == []:
        if tool_choice not in (None, "none", "auto"):
            raise InvalidRequest("tool_choice was given but tools is empty.", param="tool_choice")
        return [], None
    if not isinstance(tools, list):
        raise InvalidRequest("tools must be a list of function tools.", param="tools")
    parsed: list[Tool] = []
    for i, item in enumerate(tools):
        if not isinstance(item, dict) or item.get("type") != "function":
            raise InvalidRequest(
                "Only tools of type 'function' are supported.", param=f"tools.[{i}].type"
            )
        fn = item.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise InvalidRequest(
                "A function tool needs a name.", param=f"tools.[{i}].function.name"
            )
        name = fn["name"]
        if not _NAME.match(name):
            raise InvalidRequest(
                "Function names are 1-64 letters, digits, underscores or dashes.",
                param=f"tools.[{i}].function.name",
            )
        params = fn.get("parameters")
        if params is None:
            params = {"type": "object", "properties": {}, "additionalProperties": False}
        if not isinstance(params, dict):
            raise InvalidRequest(
                "parameters must be a JSON schema object.", param=f"tools.[{i}].function.parameters"
            )
        parsed.append(Tool(name, str(fn.get("description") or ""), params))
    if len({t.name for t in parsed}) != len(parsed):
        raise InvalidRequest("Two tools share a name.", param="tools")
    if tool_choice in (None, "auto"):
        return parsed, "auto"
    if tool_choice == "none":
        return parsed, None
    if tool_choice == "required":
        return parsed, "required"
    if isinstance(tool_choice, dict) and tool_choice.get("type") == "function":
        name = (tool_choice.get("function") or {}).get("name")
        chosen = [t for t in parsed if t.name == name]
        if not chosen:
            raise InvalidRequest(
                f"tool_choice names '{name}', which is not among the tools.", param="tool_choice"
            )
        return chosen, "required"
    raise InvalidRequest(
        "tool_choice must be 'none', 'auto', 'required' or a named function.",
        param="tool_choice",
    )


def _embedded(schema: dict[str, Any]) -> dict[str, Any]:
    return {**bound_strings(schema), "x-guidance": JSON_OPTIONS}


@dataclass(slots=True)
class ToolPlan:
    """How one request's tools shape its prompt, its grammar and its output."""

    tools: list[Tool]
    mode: Mode

    def constraint(self) -> Constraint:
        schemas = [t.call_schema() for t in self.tools]
        call = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
        if self.mode == "required":
            constraint = Constraint(kind="json", schema=call, param="tools")
        else:
            grammar = (
                f"start: TEXT | {json.dumps(OPEN)} call {json.dumps(CLOSE)}\n"
                "TEXT: /[^<][\\s\\S]*/\n"
                f"call: %json {json.dumps(_embedded(call))}\n"
            )
            constraint = Constraint(kind="lark", grammar=grammar, param="tools")
        compile_constraint(constraint, param="tools")  # refuse unsupported schemas now
        return constraint

    def instructions(self) -> str:
        listing = "\n".join(t.describe() for t in self.tools)
        call = '{"name": <tool name>, "arguments": <arguments object>}'
        if self.mode == "required":
            how = f"Answer only with a tool call, as JSON: {call}"
        else:
            how = (
                f"To call a tool, answer only with {OPEN}{call}{CLOSE}. "
                "Otherwise, answer the user normally."
            )
        return f"You can use these tools:\n<tools>\n{listing}\n</tools>\n{how}"

    def stream(self) -> ToolCallStream:
        return ToolCallStream(self.mode)


def render_tool_history(messages: list[Message], *, native: bool) -> list[Message]:
    """History with tool calls and results in a form a template without tool support reads."""
    if native:
        return messages
    out: list[Message] = []
    for m in messages:
        if m.role == "assistant" and m.tool_calls:
            calls = []
            for c in m.tool_calls:
                fn = c.get("function", {})
                try:
                    args = json.loads(fn.get("arguments") or "{}")
                except json.JSONDecodeError:
                    args = fn.get("arguments")
                payload = {"name": fn.get("name"), "arguments": args}
                calls.append(f"{OPEN}{json.dumps(payload, ensure_ascii=False)}{CLOSE}")
            out.append(Message("assistant", (m.content or "") + "".join(calls)))
        elif m.role == "tool":
            out.append(Message("user", f"<tool_response>\n{m.content}\n</tool_response>"))
        else:
            out.append(m)
    return out


def with_instructions(messages: list[Message], text: str) -> list[Message]:
    """Put ``text`` into the system message (added first when there is none)."""
    if messages and messages[0].role == "system":
        first = messages[0]
        return [Message("system", f"{first.content}\n\n{text}"), *messages[1:]]
    return [Message("system", text), *messages]


class ToolCallStream:
    """Turns the constrained text of one answer into content and tool-call deltas."""

    def __init__(self, mode: Mode) -> None:
        self.mode = mode
        self.buf = ""
        self.state: Literal["undecided", "text", "head", "args"] = (
            "undecided" if mode == "auto" else "head"
        )
        self.prefix = OPEN if mode == "auto" else ""
        self.suffix = "}" + (CLOSE if mode == "auto" else "")
        self.sent_args = 0
        self.call_id = f"call_{uuid.uuid4().hex[:24]}"

    @property
    def called(self) -> bool:
        return self.state in ("head", "args")

    def feed(self, text: str) -> list[GenerationEvent]:
        if self.state == "text":
            return [TextDelta(text)]
        self.buf += text
        events: list[GenerationEvent] = []
        if self.state == "undecided":
            if self.buf.startswith(OPEN):
                self.state = "head"
            elif OPEN.startswith(self.buf):
                return []
            else:
                self.state = "text"
                out, self.buf = self.buf, ""
                return [TextDelta(out)]
        if self.state == "head":
            match = _HEAD.match(self.buf[len(self.prefix) :])
            if not match:
                return []
            events.append(ToolCallDelta(0, "", id=self.call_id, name=match.group(1)))
            self.state = "args"
            self.sent_args = len(self.prefix) + match.end()
        # Stream the arguments, holding back what may be the wrapper's closing text.
        ready = len(self.buf) - len(self.suffix)
        if ready > self.sent_args:
            events.append(ToolCallDelta(0, self.buf[self.sent_args : ready]))
            self.sent_args = ready
        return events

    def finish(self, finished: Finished) -> list[GenerationEvent]:
        if self.state == "text":
            return [finished]
        if self.state == "undecided":  # a short answer that only looked like "<tool..."
            return [TextDelta(self.buf), finished] if self.buf else [finished]
        if finished.reason == "length" or not self.buf.endswith(self.suffix):
            raise OutputTruncated("tool call")
        events: list[GenerationEvent] = []
        if self.state == "head":  # pragma: no cover - the grammar always writes the head
            raise OutputTruncated("tool call")
        end = len(self.buf) - len(self.suffix)
        if end > self.sent_args:
            events.append(ToolCallDelta(0, self.buf[self.sent_args : end]))
        events.append(Finished("tool_calls", finished.usage))
        return events


async def tool_events(
    events: AsyncIterator[GenerationEvent], stream: ToolCallStream
) -> AsyncIterator[GenerationEvent]:
    """Apply ``stream`` to an engine's events."""
    try:
        async for event in events:
            if isinstance(event, TextDelta):
                for out in stream.feed(event.text):
                    yield out
            elif isinstance(event, Finished):
                for out in stream.finish(event):
                    yield out
            else:
                yield event
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


async def json_events(events: AsyncIterator[GenerationEvent]) -> AsyncIterator[GenerationEvent]:
    """A constrained JSON answer that hits max_tokens is an error, not half a document."""
    try:
        async for event in events:
            if isinstance(event, Finished) and event.reason == "length":
                raise OutputTruncated("JSON answer")
            yield event
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
