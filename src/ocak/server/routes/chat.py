"""``POST /v1/chat/completions``: streaming and not, over the one streaming path."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from ocak.engines.stream import Primed, collect
from ocak.errors import OcakError
from ocak.protocol.generation import Finished, TextDelta, ToolCallDelta, Usage
from ocak.protocol.openai import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    ErrorResponse,
    ToolCall,
    ToolCallFunction,
    UsageInfo,
    new_id,
    now,
)
from ocak.server.proxy import http_context, served_headers, upstream_response
from ocak.server.services import get_state
from ocak.server.streaming import DONE, SSE_HEADERS, sse, sse_error, unless_disconnected
from ocak.server.tracking import get_record
from ocak.serving import spans
from ocak.serving.knowledge import KNOWLEDGE
from ocak.serving.prompts import PROMPT_HEADER, PromptServing

router = APIRouter(tags=["chat"])

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 413, 429, 500, 502, 503, 504)
}


def usage_info(usage: Usage) -> UsageInfo:
    details = {"cached_tokens": usage.cached_tokens}
    return UsageInfo(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        prompt_tokens_details=details,
    )


@router.post("/v1/chat/completions", response_model=ChatCompletion, responses=ERRORS)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, response: Response
) -> Any:
    """Create a chat completion (OpenAI-compatible)."""
    record = get_record(request)
    record.model, record.stream = body.model, bool(body.stream)
    serving, ctx = get_state(request).serving, http_context(request)
    # A registry prompt rendered (404, 400); key may use the model (403), input caps (400),
    # limits (429).
    body = serving.admit(ctx, body)
    # The gateway picks the target (an alias's, or the local engine of that id) and waits
    # for its first chunk; a remote target's answer passes through as it came.
    served = await serving.serve(ctx, body, "chat", raw=request.json)
    headers = served_headers(served)
    used = [u.to_dict() for u in ctx.retrieved]
    if used:  # which knowledge chunks the prompt held, also for streams and hosted answers
        headers[KNOWLEDGE] = json.dumps(used, separators=(",", ":"))
    prompt = PromptServing.named(ctx)
    if ctx.record.prompt is not None:  # the registry prompt version it was rendered from
        headers[PROMPT_HEADER] = ctx.record.prompt
    primed = served.result
    if not isinstance(primed, Primed):
        return upstream_response(primed, record, body.include_usage, headers)
    cid, created = new_id("chatcmpl"), now()
    spans.response_id(ctx.span, cid)  # gen_ai.response.id, when traced
    if body.stream:
        frames = chat_frames(primed, cid, created, body.model, body.include_usage)
        return StreamingResponse(
            frames, media_type="text/event-stream", headers={**SSE_HEADERS, **headers}
        )
    response.headers.update(headers)
    result = await unless_disconnected(request, collect(primed))
    return ChatCompletion(
        id=cid,
        created=created,
        model=body.model,
        choices=[
            ChatChoice(
                message=AssistantMessage(
                    content=result.text if not result.tool_calls else (result.text or None),
                    tool_calls=[
                        ToolCall(
                            id=c.id,
                            function=ToolCallFunction(name=c.name, arguments=c.arguments),
                        )
                        for c in result.tool_calls
                    ]
                    or None,
                ),
                finish_reason=result.finished.reason,
            )
        ],
        usage=usage_info(result.finished.usage),
        **({"knowledge": used} if used else {}),
        **({"prompt": prompt} if prompt else {}),
    )


async def chat_frames(
    primed: Primed, cid: str, created: int, model: str, include_usage: bool
) -> AsyncIterator[bytes]:
    """SSE frames in OpenAI's order: role, content deltas, finish, usage, [DONE]."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        payload: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        if include_usage:
            payload["usage"] = None
        return sse(payload)

    yield chunk({"role": "assistant", "content": ""})
    try:
        async for event in primed.events():
            if isinstance(event, TextDelta):
                yield chunk({"content": event.text})
            elif isinstance(event, ToolCallDelta):
                call: dict[str, Any] = {"index": event.index}
                if event.id is not None:
                    call.update(id=event.id, type="function")
                    call["function"] = {"name": event.name, "arguments": event.arguments}
                else:
                    call["function"] = {"arguments": event.arguments}
                yield chunk({"tool_calls": [call]})
            elif isinstance(event, Finished):
                yield chunk({}, event.reason)
                if include_usage:
                    yield sse(
                        {
                            "id": cid,
                            "object": "chat.completion.chunk",
                            "created": created,
                            "model": model,
                            "choices": [],
                            "usage": usage_info(event.usage).model_dump(),
                        }
                    )
    except OcakError as exc:
        yield sse_error(exc)
        return
    yield DONE
