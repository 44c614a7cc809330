"""Anthropic's Messages API on ocak's port: ``POST /v1/messages`` and
``POST /v1/messages/count_tokens``.

A thin translation: the body becomes OpenAI's chat request and is served through
``server.native`` (keys, limits, aliases and fallback, usage record, locality
headers); the engine events come back as one ``message`` object or as Anthropic's
SSE events (``message_start``, ``content_block_start``/``_delta``/``_stop``,
``message_delta``, ``message_stop``; a failure mid-stream as ``event: error``).
Errors come back as ``{"type": "error", "error": {...}}`` (``server.shapes``), so
the ``anthropic`` SDK raises its own exception classes.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ocak.engines.base import Engine
from ocak.engines.stream import Collected, Primed, collect
from ocak.engines.threaded import ThreadedEngine
from ocak.errors import OcakError
from ocak.protocol.anthropic import (
    CountTokensRequest,
    MessagesRequest,
    stop_reason,
    tool_input,
    tool_use_id,
)
from ocak.protocol.generation import Finished, GenerationRequest, TextDelta, ToolCallDelta, Usage
from ocak.server.native import chat_request, serve_events
from ocak.server.proxy import http_context
from ocak.server.services import get_state
from ocak.server.shapes import anthropic_error
from ocak.server.streaming import SSE_HEADERS, unless_disconnected
from ocak.structured.chat import plan_body

router = APIRouter(tags=["anthropic"])


def _message_id() -> str:
    return f"msg_{uuid.uuid4().hex[:24]}"


def _usage(usage: Usage) -> dict[str, int]:
    """Anthropic's usage: every prompt token counts as input (ocak's prefix cache is a
    speed-up, not a price)."""
    return {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens}


def _message(mid: str, model: str, result: Collected) -> dict[str, Any]:
    """The whole answer as Anthropic's ``message`` object."""
    content: list[dict[str, Any]] = []
    if result.text or not result.tool_calls:
        content.append({"type": "text", "text": result.text})
    for call in result.tool_calls:
        content.append(
            {
                "type": "tool_use",
                "id": tool_use_id(call.id),
                "name": call.name,
                "input": tool_input(call.name, call.arguments),
            }
        )
    return {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(result.finished.reason, result.finished.stop_sequence),
        "stop_sequence": result.finished.stop_sequence,
        "usage": _usage(result.finished.usage),
    }


def _event(kind: str, payload: dict[str, Any]) -> bytes:
    data = json.dumps({"type": kind, **payload}, ensure_ascii=False, separators=(",", ":"))
    return f"event: {kind}\ndata: {data}\n\n".encode()


async def _events(primed: Primed, mid: str, model: str) -> AsyncIterator[bytes]:
    """Anthropic's SSE events: text and tool_use blocks as they come, then the stop reason
    and usage. Input tokens are known only at the end: ``message_start`` says 0 and
    ``message_delta`` carries the count (the SDK takes it from there)."""
    start: dict[str, Any] = {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0},
    }
    yield _event("message_start", {"message": start})
    yield _event("ping", {})
    index, open_block = -1, False

    def begin(block: dict[str, Any]) -> list[bytes]:
        nonlocal index, open_block
        out = [_event("content_block_stop", {"index": index})] if open_block else []
        index, open_block = index + 1, True
        return [*out, _event("content_block_start", {"index": index, "content_block": block})]

    kind = ""
    try:
        async for event in primed.events():
            if isinstance(event, TextDelta):
                if kind != "text":
                    for frame in begin({"type": "text", "text": ""}):
                        yield frame
                    kind = "text"
                delta = {"type": "text_delta", "text": event.text}
                yield _event("content_block_delta", {"index": index, "delta": delta})
            elif isinstance(event, ToolCallDelta):
                if event.id is not None:
                    block = {
                        "type": "tool_use",
                        "id": tool_use_id(event.id),
                        "name": event.name or "",
                        "input": {},
                    }
                    for frame in begin(block):
                        yield frame
                    kind = "tool_use"
                if event.arguments:
                    delta = {"type": "input_json_delta", "partial_json": event.arguments}
                    yield _event("content_block_delta", {"index": index, "delta": delta})
            elif isinstance(event, Finished):
                if index < 0:  # nothing generated: one empty text block, as a reply has
                    for frame in begin({"type": "text", "text": ""}):
                        yield frame
                yield _event("content_block_stop", {"index": index})
                end = {
                    "stop_reason": stop_reason(event.reason, event.stop_sequence),
                    "stop_sequence": event.stop_sequence,
                }
                yield _event("message_delta", {"delta": end, "usage": _usage(event.usage)})
                yield _event("message_stop", {})
    except OcakError as exc:
        yield _event("error", {"error": anthropic_error(exc)["error"]})


@router.post("/v1/messages")
async def messages(body: MessagesRequest, request: Request) -> Response:
    """Create a message (Anthropic's Messages API): one object, or SSE events with
    ``stream: true``."""
    chat = chat_request(body.openai())
    call = await serve_events(request, chat, "chat")
    mid = _message_id()
    if body.stream:
        frames = _events(call.primed, mid, body.model)
        headers = {**SSE_HEADERS, **call.headers}
        return StreamingResponse(frames, media_type="text/event-stream", headers=headers)
    result = await unless_disconnected(request, collect(call.primed))
    return JSONResponse(_message(mid, body.model, result), headers=call.headers)


def _count(engine: Engine, request: GenerationRequest) -> int:
    """The prompt's tokens as the engine will see them: its chat template applied."""
    if isinstance(engine, ThreadedEngine):
        return len(engine.prompt_tokens(request))
    return sum(engine.count_tokens(m.content) for m in request.messages or [])


@router.post("/v1/messages/count_tokens")
async def count_tokens(body: CountTokensRequest, request: Request) -> JSONResponse:
    """The prompt's input tokens with the model's own tokenizer and chat template (tool
    definitions included, as ocak puts them into the prompt)."""
    serving = get_state(request).serving
    name = serving.tokenizer_of(http_context(request), body.model)  # 403, 404, remote: 400
    plan = plan_body(chat_request({**body.openai(), "max_tokens": 1}))
    engine = await serving.engines.acquire(name)
    try:
        tokens = await asyncio.to_thread(_count, engine, plan.request)
    finally:
        serving.engines.release(name)
    return JSONResponse({"input_tokens": tokens})
