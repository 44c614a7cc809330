"""KoboldCpp's API (the KoboldAI United API plus KoboldCpp's ``/api/extra``) on ocak's port.

``/api/v1/generate`` answers ``{"results": [{"text", "finish_reason"}]}``;
``/api/extra/generate/stream`` streams ``event: message`` / ``data: {"token": ...}``
frames as KoboldCpp writes them; ``/api/extra/generate/check`` gives a running
generation's text so far and ``/api/extra/abort`` stops it, both by ``genkey``.
A thin translation: each body becomes OpenAI's completion request served through
``server.native`` (keys, limits, aliases and fallback, usage record). Errors come
back as ``{"detail": {"msg", "type"}}`` (``server.shapes``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ocak.errors import InvalidRequest, OcakError
from ocak.protocol.kobold import (
    DEFAULT_MAX_LENGTH,
    KoboldDetokenize,
    KoboldGenerate,
    KoboldKey,
    KoboldTokens,
)
from ocak.server.auth import get_key
from ocak.server.genkeys import Running
from ocak.server.native import completion_request, default_model, local_engine, serve_events
from ocak.server.proxy import http_context
from ocak.server.services import get_state
from ocak.server.streaming import SSE_HEADERS, unless_disconnected

router = APIRouter(tags=["kobold"])
# KoboldAI United's API version: stop sequences (1.2.2) and use_default_badwordsids (1.2.4)
# are the features its clients gate on it.
KAI_VERSION = "1.2.5"
# The KoboldCpp version whose features ocak honours: SillyTavern turns on streaming (1.30),
# mirostat's field (1.35, accepted at 0), token counts (1.41), grammar (1.44) and min_p
# (1.48) by it; DRY (1.68) and XTC (1.74) come later, so clients do not expect them on.
KCPP_VERSION = "1.48"


def _owner(request: Request) -> int | None:
    key = get_key(request)
    return key.id if key is not None else None


def _frame(payload: dict[str, Any]) -> bytes:
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"event: message\ndata: {data}\n\n".encode()


def _reason(run: Running) -> str:
    """KoboldCpp's finish_reason: ``length`` or ``stop`` (an abort stops too)."""
    if run.finished is not None and run.finished.reason == "length" and not run.aborted:
        return "length"
    return "stop"


async def check_context(request: Request, model: str, body: KoboldGenerate) -> None:
    """``max_context_length`` below the served window is honoured: a prompt that does not
    fit with ``max_length`` is a 400 (ocak never cuts a prompt; KoboldCpp would drop its
    start). Above it, the served window is the limit (also a 400 when exceeded)."""
    limit = body.max_context_length
    if limit is None:
        return
    state = get_state(request)
    engine_name = local_engine(state, model)
    if engine_name is None:
        return
    engine = state.engines.find(engine_name)
    if engine is None or limit >= engine.info().context_length:
        return
    ctx = http_context(request)
    prompt = len(await state.serving.tokenize(ctx, model, body.full_prompt))
    wanted = body.max_length or DEFAULT_MAX_LENGTH
    if prompt + wanted > limit:
        raise InvalidRequest(
            f"The prompt ({prompt} tokens) and max_length ({wanted}) do not fit in "
            f"max_context_length ({limit}); ocak does not cut prompts short.",
            param="max_context_length",
        )


async def _start(request: Request, body: KoboldGenerate) -> tuple[Running, dict[str, str]]:
    model = default_model(request, body.model)
    request_body = completion_request(body.openai(model))
    await check_context(request, model, body)
    call = await serve_events(request, request_body, "completions")
    generations = get_state(request).generations
    run = generations.start(body.genkey, _owner(request), call.primed, keep_stop=not body.trim_stop)
    return run, call.headers


async def _ended(run: Running) -> None:
    """Wait for the generation's task; an abort ends it without an error."""
    assert run.task is not None
    await asyncio.wait({run.task})
    error = None if run.task.cancelled() else run.task.exception()
    if error is not None:
        raise error


def _stop_unfinished(run: Running) -> None:
    """The client left (or the response failed): the generation stops too."""
    if run.task is not None and not run.task.done():
        run.abort()


@router.post("/api/v1/generate")
async def generate(body: KoboldGenerate, request: Request) -> Response:
    """Generate from a prompt; the whole text at the end (or what there was at an abort)."""
    run, headers = await _start(request, body)
    try:
        await unless_disconnected(request, _ended(run))
    finally:
        _stop_unfinished(run)
    result: dict[str, Any] = {"text": run.text, "finish_reason": _reason(run)}
    if run.finished is not None:
        usage = run.finished.usage
        result.update(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)
    return JSONResponse({"results": [result]}, headers=headers)


async def _frames(run: Running) -> AsyncIterator[bytes]:
    try:
        while True:
            item = await run.queue.get()
            if item is None:
                break
            if isinstance(item, OcakError):
                # KoboldCpp has no error event; SillyTavern shows an ``error`` object's message.
                yield _frame({"token": "", "error": {"message": item.message}})
                return
            yield _frame({"token": item, "finish_reason": None})
        yield _frame({"token": "", "finish_reason": _reason(run)})
    finally:
        _stop_unfinished(run)


@router.post("/api/extra/generate/stream")
@router.post("/api/extra/generate/stream/", include_in_schema=False)  # CHIM's path
async def generate_stream(body: KoboldGenerate, request: Request) -> Response:
    """Generate, streaming each piece of text as KoboldCpp's SSE ``message`` events."""
    run, headers = await _start(request, body)
    return StreamingResponse(
        _frames(run), media_type="text/event-stream", headers={**SSE_HEADERS, **headers}
    )


@router.post("/api/extra/generate/check")
async def check(request: Request, body: KoboldKey | None = None) -> dict[str, Any]:
    """The text so far of the caller's generation with that genkey (empty if none runs)."""
    genkey = body.genkey if body else None
    run = get_state(request).generations.find(genkey, _owner(request))
    return {"results": [{"text": run.text if run else ""}]}


@router.post("/api/extra/abort")
async def abort(request: Request, body: KoboldKey | None = None) -> dict[str, Any]:
    """Stop the caller's generation with that genkey (without one: all of the caller's)."""
    genkey = body.genkey if body else None
    stopped = get_state(request).generations.abort(genkey, _owner(request))
    return {"success": "true" if stopped else "false", "done": "true"}


@router.post("/api/extra/tokencount")
@router.post("/api/extra/tokenize")  # koboldapi's tokenize(): the same answer
async def tokencount(body: KoboldTokens, request: Request) -> dict[str, Any]:
    """The prompt's tokens on the model's own tokenizer: ``{"value": n, "ids": [...]}``."""
    model = default_model(request, body.model)
    ids = await get_state(request).serving.tokenize(http_context(request), model, body.prompt)
    return {"value": len(ids), "ids": ids}


@router.post("/api/extra/detokenize")
async def detokenize(body: KoboldDetokenize, request: Request) -> dict[str, Any]:
    """Token ids back to text: ``{"result": text, "success": true}``."""
    model = default_model(request, body.model)
    text = await get_state(request).serving.detokenize(http_context(request), model, body.ids)
    return {"result": text, "success": True}


@router.get("/api/v1/model")
async def model(request: Request) -> dict[str, Any]:
    """The served model, as KoboldCpp names it: ``koboldcpp/<name>``."""
    return {"result": f"koboldcpp/{default_model(request, None)}"}


@router.get("/api/v1/info/version")
async def info_version() -> dict[str, Any]:
    return {"result": KAI_VERSION}


@router.get("/api/extra/version")
async def extra_version() -> dict[str, Any]:
    """What SillyTavern reads to know it talks to KoboldCpp, and which features it has."""
    return {"result": "KoboldCpp", "version": KCPP_VERSION, "protected": False}


def _context(request: Request) -> int:
    state = get_state(request)
    name = local_engine(state, default_model(request, None))
    engine = state.engines.find(name) if name else None
    return engine.info().context_length if engine else 0


@router.get("/api/v1/config/max_context_length")
async def max_context_length(request: Request) -> dict[str, Any]:
    """The context window the model is served with."""
    return {"value": _context(request)}


@router.get("/api/extra/true_max_context_length")
async def true_max_context_length(request: Request) -> dict[str, Any]:
    return {"value": _context(request)}


@router.get("/api/v1/config/max_length")
async def max_length() -> dict[str, Any]:
    """The tokens generated when a request sets no max_length."""
    return {"value": DEFAULT_MAX_LENGTH}
