"""llama-server's native endpoints on ocak's port: ``/completion``, ``/tokenize``,
``/detokenize`` and ``/props`` (``/health`` is ocak's own and answers ``{"status": "ok"}``
as llama-server does).

``/completion`` is a thin translation onto OpenAI's completion request, served
through ``server.native``; with ``stream`` it sends ``data: {"content", "stop":
false}`` frames and a last one with ``stop: true``, the token counts and
``timings``, as llama-server does (no ``[DONE]``). Tokenizing runs on the model's
own tokenizer in a worker thread (SillyTavern tokenizes every prompt it builds).
Errors come back as ``{"error": {"code", "message", "type"}}`` (``server.shapes``).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ocak import __version__
from ocak.engines.stream import Collected, Primed, collect
from ocak.errors import OcakError
from ocak.protocol.generation import Finished, TextDelta
from ocak.protocol.llama_server import LlamaCompletion, LlamaDetokenize, LlamaTokenize
from ocak.server.native import completion_request, default_model, local_engine, serve_events
from ocak.server.proxy import http_context
from ocak.server.services import get_state
from ocak.server.streaming import SSE_HEADERS, unless_disconnected

router = APIRouter(tags=["llama-server"])


def _data(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


class Clock:
    """Prompt and generation times for llama-server's ``timings``."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.first: float | None = None

    def mark(self) -> None:
        if self.first is None:
            self.first = time.monotonic()

    def timings(self, finished: Finished) -> dict[str, Any]:
        end = time.monotonic()
        first = self.first or end
        prompt_ms, predicted_ms = (first - self.started) * 1e3, (end - first) * 1e3
        p, n = finished.usage.prompt_tokens, finished.usage.completion_tokens
        return {
            "prompt_n": p,
            "prompt_ms": prompt_ms,
            "prompt_per_token_ms": prompt_ms / p if p else 0.0,
            "prompt_per_second": p / prompt_ms * 1e3 if prompt_ms else 0.0,
            "predicted_n": n,
            "predicted_ms": predicted_ms,
            "predicted_per_token_ms": predicted_ms / n if n else 0.0,
            "predicted_per_second": n / predicted_ms * 1e3 if predicted_ms else 0.0,
        }


def _last(model: str, finished: Finished, clock: Clock, content: str) -> dict[str, Any]:
    """The final object: llama-server's ``stop_type`` is ``limit`` at the token limit,
    ``word`` when a stop string ended the text (``stopping_word`` says which), else ``eos``."""
    word = finished.stop_sequence
    return {
        "content": content,
        "stop": True,
        "index": 0,
        "model": model,
        "tokens_predicted": finished.usage.completion_tokens,
        "tokens_evaluated": finished.usage.prompt_tokens,
        "tokens_cached": finished.usage.cached_tokens,
        "stop_type": "limit" if finished.reason == "length" else "word" if word else "eos",
        "stopping_word": word or "",
        "truncated": False,
        "timings": clock.timings(finished),
    }


async def _frames(primed: Primed, model: str, clock: Clock) -> AsyncIterator[bytes]:
    try:
        async for event in primed.events():
            if isinstance(event, TextDelta):
                clock.mark()
                yield _data({"content": event.text, "stop": False, "index": 0})
            elif isinstance(event, Finished):
                yield _data(_last(model, event, clock, ""))
    except OcakError as exc:
        yield _data({"error": {"code": exc.status, "message": exc.message, "type": exc.type}})


async def _collected(primed: Primed, clock: Clock) -> Collected:
    result = await collect(primed)
    clock.mark()
    return result


@router.post("/completion")
async def completion(body: LlamaCompletion, request: Request) -> Response:
    """Complete a prompt (llama-server's native API)."""
    clock = Clock()
    model = default_model(request, body.model)
    call = await serve_events(request, completion_request(body.openai(model)), "completions")
    if body.stream:
        frames = _frames(call.primed, model, clock)
        return StreamingResponse(
            frames, media_type="text/event-stream", headers={**SSE_HEADERS, **call.headers}
        )
    result = await unless_disconnected(request, _collected(call.primed, clock))
    answer = _last(model, result.finished, clock, result.text)
    return JSONResponse(answer, headers=call.headers)


@router.post("/tokenize")
async def tokenize(body: LlamaTokenize, request: Request) -> dict[str, Any]:
    """``{"tokens": [ids]}``; with ``with_pieces``, ``[{"id", "piece"}]``."""
    body.check()
    model = default_model(request, body.model)
    serving, ctx = get_state(request).serving, http_context(request)
    ids = await serving.tokenize(ctx, model, body.content, add_special=body.add_special)
    if not body.with_pieces:
        return {"tokens": ids}
    pieces = [await serving.detokenize(ctx, model, [i]) for i in ids]
    return {"tokens": [{"id": i, "piece": p} for i, p in zip(ids, pieces, strict=True)]}


@router.post("/detokenize")
async def detokenize(body: LlamaDetokenize, request: Request) -> dict[str, Any]:
    """``{"content": text}`` for token ids."""
    model = default_model(request, body.model)
    ctx = http_context(request)
    return {"content": await get_state(request).serving.detokenize(ctx, model, body.tokens)}


@router.get("/props")
async def props(request: Request) -> dict[str, Any]:
    """What llama-server's clients read: the context (``default_generation_settings.n_ctx``),
    slots, the chat template and the model's path."""
    state = get_state(request)
    model = default_model(request, None)
    state.auth.permit(http_context(request).key, model)
    name = local_engine(state, model)
    engine = state.engines.find(name) if name else None
    info = engine.info() if engine else None
    template = getattr(getattr(getattr(engine, "model", None), "chat_template", None), "source", "")
    return {
        "default_generation_settings": {
            "id": 0,
            "id_task": -1,
            "n_ctx": info.context_length if info else 0,
            "speculative": False,
            "is_processing": bool(engine and engine.stats().active),
            "params": {"n_predict": -1, "seed": -1},
            "model": model,
        },
        "total_slots": engine.stats().slots if engine else 1,
        "model_path": info.path if info else "",
        "model_alias": model,
        "chat_template": template or "",
        "modalities": {"vision": False, "audio": False},
        "build_info": f"ocak {__version__}",
    }
