"""Plan a chat request for a local engine: prompt, grammar, and how to read the output."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from ocak.errors import InvalidRequest
from ocak.protocol.generation import Constraint, GenerationEvent, GenerationRequest
from ocak.protocol.openai import ChatCompletionRequest, CompletionRequest
from ocak.structured.grammar import compile_constraint, gbnf_constraint
from ocak.structured.tools import (
    ToolPlan,
    json_events,
    parse_tools,
    render_tool_history,
    tool_events,
    with_instructions,
)

Wrap = Callable[[AsyncIterator[GenerationEvent]], AsyncIterator[GenerationEvent]]


def _identity(events: AsyncIterator[GenerationEvent]) -> AsyncIterator[GenerationEvent]:
    return events


@dataclass(slots=True)
class ChatPlan:
    request: GenerationRequest
    wrap: Wrap = field(default=_identity)


def response_constraint(response_format: Any) -> Constraint | None:
    """``response_format`` as a constraint: json_object, json_schema, or none for text."""
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise InvalidRequest("response_format must be an object.", param="response_format")
    kind = response_format.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return Constraint(kind="json", schema={"type": "object"})
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise InvalidRequest(
                "json_schema needs a 'schema' object.", param="response_format.json_schema"
            )
        return Constraint(kind="json", schema=spec.get("schema") or {"type": "object"})
    raise InvalidRequest(
        f"response_format type '{kind}' is not supported (text, json_object, json_schema).",
        param="response_format.type",
    )


def plan_body(body: ChatCompletionRequest) -> ChatPlan:
    """A chat body's engine request plus how to read its output (tool calls, JSON)."""
    return plan_chat(
        body.generation_request(),
        tools=body.tools,
        tool_choice=body.tool_choice,
        response_format=body.response_format,
    )


def plan_completion(body: CompletionRequest) -> ChatPlan:
    """A completion body's engine request, with the constraint its ocak extras ask for:
    ``grammar`` (GBNF, as llama-server and KoboldCpp take it) or ``response_format``."""
    request = body.to_generation_request()
    extra = body.model_extra or {}
    grammar = gbnf_constraint(extra.get("grammar"))
    json_constraint = response_constraint(extra.get("response_format"))
    if grammar is not None and json_constraint is not None:
        raise InvalidRequest(
            "grammar and a JSON schema cannot both constrain one answer.", param="grammar"
        )
    if grammar is not None:
        request.constraint = grammar
        return ChatPlan(request)
    if json_constraint is not None:
        compile_constraint(json_constraint)
        request.constraint = json_constraint
        return ChatPlan(request, json_events)
    return ChatPlan(request)


def plan_chat(
    request: GenerationRequest,
    *,
    tools: Any = None,
    tool_choice: Any = None,
    response_format: Any = None,
) -> ChatPlan:
    """Fold tools and response_format into the generation request, and say how to read it."""
    assert request.messages is not None
    offered, mode = parse_tools(tools, tool_choice)
    json_constraint = response_constraint(response_format)
    if json_constraint is not None and mode == "required":
        raise InvalidRequest(
            "response_format and a required tool call cannot both constrain one answer.",
            param="response_format",
        )
    request.messages = render_tool_history(request.messages, native=False)
    if offered and mode is not None:
        plan = ToolPlan(offered, mode)
        request.messages = with_instructions(request.messages, plan.instructions())
        if json_constraint is None:
            request.constraint = plan.constraint()
            stream = plan.stream()
            return ChatPlan(request, lambda events: tool_events(events, stream))
    if json_constraint is not None:
        compile_constraint(json_constraint)  # an unsupported schema is a 400 now
        request.constraint = json_constraint
        return ChatPlan(request, json_events)
    return ChatPlan(request)
