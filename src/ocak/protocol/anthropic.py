"""Anthropic's Messages API wire types (``/v1/messages``, ``/v1/messages/count_tokens``) as
pydantic v2 models, and their translation into OpenAI's request dict that ocak serves.

Requests keep fields they do not know (newer SDKs keep working) but refuse, with a 400
naming the field, what ocak cannot honour: image and document blocks, server tools,
extended thinking, an assistant prefill, MCP servers and containers. Prompt-caching
hints (``cache_control``) and ``service_tier`` are accepted and have no effect: ocak
reuses a prompt's cached prefix by itself and has one tier.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ocak.errors import InvalidRequest, OcakError, UnsupportedParameter
from ocak.protocol.neutral import refuse_non_neutral

MAX_STOP_SEQUENCES = 16
TEXT_ONLY = "ocak's models read text only"

Unit = Annotated[float, Field(ge=0.0, le=1.0)]


class Block(BaseModel):
    """A content block of any type; which fields a type needs is checked in translation,
    so that an error can name the block (``messages.[0].content.[1].id``)."""

    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: dict[str, Any] | None = None
    tool_use_id: str | None = None
    content: str | list[Block] | None = None
    is_error: bool | None = None


class MessageParam(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["user", "assistant"]
    content: str | list[Block]


class ToolParam(BaseModel):
    """A tool the client defines (``type`` absent or ``custom``); server tools are refused."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1)
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    type: str | None = None


class ToolChoice(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Metadata(BaseModel):
    model_config = ConfigDict(extra="allow")

    user_id: str | None = None


class Thinking(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    budget_tokens: int | None = None


def _need(value: str | None, param: str, what: str) -> str:
    if not value:
        raise InvalidRequest(f"Invalid value for '{param}': {what} is required.", param=param)
    return value


def _refuse_block(kind: str, param: str) -> UnsupportedParameter:
    if kind in ("image", "document"):
        return UnsupportedParameter(param, f"'{kind}' blocks; {TEXT_ONLY}")
    return UnsupportedParameter(param, f"'{kind}' blocks")


def _texts(blocks: str | list[Block] | None, param: str) -> str:
    """The text of a string or a list of text blocks (a tool result's or the system's)."""
    if blocks is None:
        return ""
    if isinstance(blocks, str):
        return blocks
    pieces = []
    for j, block in enumerate(blocks):
        if block.type != "text":
            raise _refuse_block(block.type, f"{param}.[{j}]")
        pieces.append(block.text or "")
    return "".join(pieces)


class CountTokensRequest(BaseModel):
    """``POST /v1/messages/count_tokens``: what a prompt is made of."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[MessageParam] = Field(min_length=1)
    system: str | list[Block] | None = None
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None

    # Accepted only at the value that turns them off.
    NEUTRAL: ClassVar[dict[str, tuple[Any, ...]]] = {
        "mcp_servers": (None, []),
        "container": (None,),
        "context_management": (None,),
    }

    def openai(self) -> dict[str, Any]:
        """OpenAI's chat request for this body (tool blocks become tool calls and results)."""
        refuse_non_neutral(self.model_extra, self.NEUTRAL)
        if self.thinking is not None and self.thinking.type != "disabled":
            raise UnsupportedParameter("thinking", "ocak's models answer without a thinking phase")
        data: dict[str, Any] = {"model": self.model, "messages": self._messages()}
        if self.tools:
            data["tools"] = [_tool(t, i) for i, t in enumerate(self.tools)]
        if self.tool_choice is not None:
            data.update(_tool_choice(self.tool_choice))
        return data

    def _messages(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        system = _texts(self.system, "system")
        if system:
            out.append({"role": "system", "content": system})
        names: dict[str, str] = {}  # tool_use id -> the tool's name, for its result
        for i, m in enumerate(self.messages):
            if isinstance(m.content, str):
                out.append({"role": m.role, "content": m.content})
            elif m.role == "assistant":
                out.append(_assistant(m.content, f"messages.[{i}].content", names))
            else:
                out.extend(_user(m.content, f"messages.[{i}].content", names))
        if self.messages[-1].role == "assistant":
            raise UnsupportedParameter(
                f"messages.[{len(self.messages) - 1}]",
                "a reply cannot continue an assistant prefill; end with a user turn",
            )
        return out


def _misplaced(kind: str, at: str, turn: str) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid value for '{at}.type': {kind} blocks belong in {turn}.", param=f"{at}.type"
    )


def _assistant(blocks: list[Block], param: str, names: dict[str, str]) -> dict[str, Any]:
    """An assistant turn: its text, and its ``tool_use`` blocks as OpenAI tool calls."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, b in enumerate(blocks):
        at = f"{param}.[{j}]"
        if b.type == "text":
            texts.append(b.text or "")
        elif b.type == "tool_use":
            cid = _need(b.id, f"{at}.id", "a tool_use block's id")
            name = _need(b.name, f"{at}.name", "a tool_use block's name")
            names[cid] = name
            arguments = json.dumps(b.input or {}, ensure_ascii=False)
            calls.append(
                {"id": cid, "type": "function", "function": {"name": name, "arguments": arguments}}
            )
        elif b.type in ("thinking", "redacted_thinking"):
            continue  # a thinking model's reasoning in history: not sent on
        elif b.type == "tool_result":
            raise _misplaced("tool_result", at, "a user turn")
        else:
            raise _refuse_block(b.type, at)
    item: dict[str, Any] = {"role": "assistant", "content": "".join(texts)}
    if calls:
        item["tool_calls"] = calls
    return item


def _user(blocks: list[Block], param: str, names: dict[str, str]) -> list[dict[str, Any]]:
    """A user turn: ``tool_result`` blocks become tool messages, text a user message, in
    the order they came."""
    out: list[dict[str, Any]] = []
    texts: list[str] = []

    def flush() -> None:
        if texts:
            out.append({"role": "user", "content": "".join(texts)})
            texts.clear()

    for j, b in enumerate(blocks):
        at = f"{param}.[{j}]"
        if b.type == "text":
            texts.append(b.text or "")
        elif b.type == "tool_result":
            flush()
            cid = _need(b.tool_use_id, f"{at}.tool_use_id", "a tool_result block's tool_use_id")
            text = _texts(b.content, f"{at}.content")
            item: dict[str, Any] = {
                "role": "tool",
                "tool_call_id": cid,
                "content": f"Error: {text}" if b.is_error else text,
            }
            if cid in names:
                item["name"] = names[cid]
            out.append(item)
        elif b.type == "tool_use":
            raise _misplaced("tool_use", at, "an assistant turn")
        else:
            raise _refuse_block(b.type, at)
    flush()
    return out


def _tool(tool: ToolParam, index: int) -> dict[str, Any]:
    """A client tool as an OpenAI function tool."""
    if tool.type not in (None, "custom"):
        raise UnsupportedParameter(
            f"tools.[{index}].type", f"server tool '{tool.type}'; define the tool yourself"
        )
    function: dict[str, Any] = {"name": tool.name, "description": tool.description or ""}
    if tool.input_schema is not None:
        function["parameters"] = tool.input_schema
    return {"type": "function", "function": function}


def _tool_choice(choice: ToolChoice) -> dict[str, Any]:
    """``auto``, ``any`` (some tool: OpenAI's ``required``), ``tool`` (that one), ``none``."""
    out: dict[str, Any] = {}
    if choice.type == "tool":
        name = _need(choice.name, "tool_choice.name", "the name of the tool to call")
        out["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        out["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[choice.type]
    if choice.disable_parallel_tool_use is not None:
        out["parallel_tool_calls"] = not choice.disable_parallel_tool_use
    return out


class OutputFormat(BaseModel):
    """``output_config.format``: Anthropic's structured outputs (a JSON schema)."""

    type: Literal["json_schema"]
    json_schema: dict[str, Any] = Field(alias="schema")


class OutputConfig(BaseModel):
    """``output_config``: ``format`` is honoured with ocak's constrained decoding;
    ``effort`` is accepted with no effect (ocak's models have no thinking phase to size)."""

    model_config = ConfigDict(extra="allow")

    effort: Literal["low", "medium", "high", "xhigh", "max"] | None = None
    format: OutputFormat | None = None

    NEUTRAL: ClassVar[dict[str, tuple[Any, ...]]] = {"task_budget": (None,)}

    def openai(self) -> dict[str, Any]:
        refuse_non_neutral(self.model_extra, self.NEUTRAL, prefix="output_config.")
        if self.format is None:
            return {}
        schema = {"name": "output", "schema": self.format.json_schema, "strict": True}
        return {"response_format": {"type": "json_schema", "json_schema": schema}}


class MessagesRequest(CountTokensRequest):
    """``POST /v1/messages``."""

    max_tokens: Annotated[int, Field(ge=1)]
    stop_sequences: list[str] | None = None
    stream: bool | None = None
    temperature: Unit | None = None
    top_p: Unit | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    metadata: Metadata | None = None
    service_tier: Literal["auto", "standard_only"] | None = None
    output_config: OutputConfig | None = None

    @field_validator("stop_sequences")
    @classmethod
    def _check_stops(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            if len(v) > MAX_STOP_SEQUENCES:
                raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed")
            if any(s == "" for s in v):
                raise ValueError("stop sequences must not be empty")
        return v

    def openai(self) -> dict[str, Any]:
        data = super().openai()
        data.update(max_tokens=self.max_tokens, stream=bool(self.stream))
        if self.stop_sequences:
            data["stop"] = list(self.stop_sequences)
        for name in ("temperature", "top_p", "top_k"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        if self.metadata is not None and self.metadata.user_id:
            data["user"] = self.metadata.user_id
        if self.output_config is not None:
            data.update(self.output_config.openai())
        return data


StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


def stop_reason(reason: str, stop_sequence: str | None = None) -> StopReason:
    """An engine's finish reason in Anthropic's words."""
    if reason == "length":
        return "max_tokens"
    if reason == "tool_calls":
        return "tool_use"
    if reason == "stop" and stop_sequence is not None:
        return "stop_sequence"
    return "end_turn"


def tool_use_id(call_id: str) -> str:
    """ocak's call id in Anthropic's spelling (``toolu_...``)."""
    return "toolu_" + call_id.removeprefix("call_")


def tool_input(name: str, arguments: str) -> dict[str, Any]:
    """A tool call's arguments (JSON text) as the ``input`` object of a tool_use block."""
    try:
        value = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise OcakError(f"the call to tool '{name}' has arguments that are not a JSON object")
    return value
