"""``POST /v1/completions``: the legacy text completion endpoint."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from ocak.engines.stream import Primed, collect
from ocak.errors import OcakError
from ocak.protocol.generation import Finished, TextDelta
from ocak.protocol.openai import (
    Completion,
    CompletionChoice,
    CompletionRequest,
    new_id,
    now,
)
from ocak.server.proxy import http_context, served_headers, upstream_response
from ocak.server.routes.chat import ERRORS, usage_info
from ocak.server.services import get_state
from ocak.server.streaming import DONE, SSE_HEADERS, sse, sse_error, unless_disconnected
from ocak.server.tracking import get_record
from ocak.serving import spans

router = APIRouter(tags=["completions"])


@router.post("/v1/completions", response_model=Completion, responses=ERRORS)
async def completions(body: CompletionRequest, request: Request, response: Response) -> Any:
    """Create a text completion (OpenAI-compatible)."""
    record = get_record(request)
    record.model, record.stream = body.model, bool(body.stream)
    serving, ctx = get_state(request).serving, http_context(request)
    serving.admit(ctx, body)  # key may use the model (403), input caps (400), limits (429)
    served = await serving.serve(ctx, body, "completions", raw=request.json)
    headers = served_headers(served)
    primed = served.result
    if not isinstance(primed, Primed):
        return upstream_response(primed, record, body.include_usage, headers)
    cid, created = new_id("cmpl"), now()
    spans.response_id(ctx.span, cid)  # gen_ai.response.id, when traced
    if body.stream:
        frames = completion_frames(primed, cid, created, body.model, body.include_usage)
        return StreamingResponse(
            frames, media_type="text/event-stream", headers={**SSE_HEADERS, **headers}
        )
    response.headers.update(headers)
    result = await unless_disconnected(request, collect(primed))
    return Completion(
        id=cid,
        created=created,
        model=body.model,
        choices=[CompletionChoice(text=result.text, finish_reason=result.finished.reason)],
        usage=usage_info(result.finished.usage),
    )


async def completion_frames(
    primed: Primed, cid: str, created: int, model: str, include_usage: bool
) -> AsyncIterator[bytes]:
    def chunk(text: str, finish: str | None = None) -> bytes:
        return sse(
            {
                "id": cid,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
            }
        )

    try:
        async for event in primed.events():
            if isinstance(event, TextDelta):
                yield chunk(event.text)
            elif isinstance(event, Finished):
                yield chunk("", event.reason)
                if include_usage:
                    yield sse(
                        {
                            "id": cid,
                            "object": "text_completion",
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
