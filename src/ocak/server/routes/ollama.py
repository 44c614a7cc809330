"""Ollama's API on ocak's port: ``/api/chat``, ``/api/generate``, ``/api/tags``, ``/api/show``,
``/api/ps``, ``/api/version`` and ``/``.

A thin translation: each body becomes OpenAI's request and is served through
``server.native`` (keys, limits, aliases and fallback, usage record, locality
headers), and the engine events come back as Ollama's NDJSON lines (one JSON
object a line, the last with ``done: true`` and the timings in nanoseconds) or,
with ``stream: false``, as one object. A tool call goes out whole, with its
arguments as an object, in the line before the last. Errors come back as
``{"error": "..."}`` (``server.shapes``).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from numpy.typing import NDArray

from ocak.config import parse_keep_alive
from ocak.engines.base import Engine
from ocak.engines.stream import Collected, CollectedCall, Primed, collect
from ocak.errors import InvalidRequest, ModelNotFound, OcakError
from ocak.gateway.router import Alias, LocalTarget
from ocak.models.describe import describe
from ocak.models.hub import parse_ref
from ocak.models.store import ModelSpec, ModelStore
from ocak.protocol.generation import Finished, TextDelta, ToolCallDelta
from ocak.protocol.ollama import (
    ChatRequest,
    EmbedRequest,
    GenerateRequest,
    LegacyEmbedRequest,
    ModelRequest,
    PullRequest,
)
from ocak.providers.base import LOCALITY
from ocak.providers.errors import UpstreamBroken
from ocak.server.auth import get_key, require_admin
from ocak.server.native import NativeCall, chat_request, completion_request, serve_events
from ocak.server.proxy import http_context, record_headers
from ocak.server.pulls import Pull
from ocak.server.routes.console import asset as console_asset
from ocak.server.routes.console import wants_console
from ocak.server.services import Services, get_state
from ocak.server.streaming import unless_disconnected
from ocak.server.tracking import get_record
from ocak.serving.embeddings import Embedded

router = APIRouter(tags=["ollama"])
NDJSON = "application/x-ndjson"
# The Ollama API version these routes follow (clients gate features on it).
OLLAMA_VERSION = "0.12.0"
NEVER = "9999-12-31T23:59:59Z"  # expires_at of a model kept loaded for ever


def _stamp(at: float | None = None) -> str:
    moment = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    return moment.isoformat().replace("+00:00", "Z")


def _line(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


@dataclass(slots=True)
class Timing:
    """Where the time of one request went, for the last line's ``*_duration`` fields."""

    started: int  # monotonic ns
    primed: int  # the first event arrived: model loaded, prompt read
    load: int  # ns spent loading models meanwhile

    def fields(self, finished: Finished) -> dict[str, Any]:
        end = time.monotonic_ns()
        return {
            "total_duration": end - self.started,
            "load_duration": self.load,
            "prompt_eval_count": finished.usage.prompt_tokens,
            "prompt_eval_duration": max(0, self.primed - self.started - self.load),
            "eval_count": finished.usage.completion_tokens,
            "eval_duration": end - self.primed,
        }


def _done_reason(finished: Finished) -> str:
    return "stop" if finished.reason == "tool_calls" else finished.reason


def _tool_calls(calls: list[CollectedCall]) -> list[dict[str, Any]]:
    """Ollama's tool calls: the arguments as an object."""
    out = []
    for i, c in enumerate(calls):
        try:
            args = json.loads(c.arguments or "{}")
        except json.JSONDecodeError:
            raise OcakError(
                f"the tool call to '{c.name}' has arguments that are not JSON"
            ) from None
        out.append({"id": c.id, "function": {"index": i, "name": c.name, "arguments": args}})
    return out


def _local_engines(state: Services, model: str) -> list[str]:
    """The local engines a model name may run on: an alias's local targets, or itself."""
    alias = state.serving.router.aliases.get(model)
    if alias is None:
        return [model]
    return [t.engine for t in alias.targets if isinstance(t, LocalTarget)]


def check_context(state: Services, model: str, num_ctx: int | None) -> None:
    """``options.num_ctx`` is honoured when the model is served with at least that context
    (ocak never cuts a prompt short: one that does not fit is a 400); more is a 400."""
    if num_ctx is None:
        return
    for name in _local_engines(state, model):
        engine = state.engines.find(name)
        if engine is None:
            continue
        ctx = engine.info().context_length
        if num_ctx > ctx:
            raise InvalidRequest(
                f"Invalid value for 'options.num_ctx': {num_ctx} is more than the {ctx} tokens "
                f"of context '{name}' is served with (`ocak serve --ctx-size` sets it).",
                param="options.num_ctx",
            )


async def _served(
    request: Request, data: dict[str, Any], model: str, num_ctx: int | None, chat: bool
) -> tuple[NativeCall, Timing]:
    started = time.monotonic_ns()
    state = get_state(request)
    body = chat_request(data) if chat else completion_request(data)
    check_context(state, model, num_ctx)
    loaded = sum(state.engines.load_seconds.values())
    call = await serve_events(request, body, "chat" if chat else "completions")
    load = int((sum(state.engines.load_seconds.values()) - loaded) * 1e9)
    return call, Timing(started, time.monotonic_ns(), load)


async def _lines(primed: Primed, model: str, timing: Timing, chat: bool) -> AsyncIterator[bytes]:
    """NDJSON lines: text as it comes, a tool call whole, then the ``done`` line."""
    calls: list[CollectedCall] = []

    def piece(text: str, **more: Any) -> dict[str, Any]:
        head: dict[str, Any] = {"model": model, "created_at": _stamp()}
        if chat:
            head["message"] = {"role": "assistant", "content": text, **more}
        else:
            head["response"] = text
        return head

    try:
        async for event in primed.events():
            if isinstance(event, TextDelta):
                yield _line({**piece(event.text), "done": False})
            elif isinstance(event, ToolCallDelta):
                if event.id is not None:
                    calls.append(CollectedCall(event.id, event.name or "", ""))
                calls[event.index].arguments += event.arguments
            elif isinstance(event, Finished):
                if calls:
                    yield _line({**piece("", tool_calls=_tool_calls(calls)), "done": False})
                last = {**piece(""), "done": True, "done_reason": _done_reason(event)}
                yield _line({**last, **timing.fields(event)})
    except OcakError as exc:
        yield _line({"error": exc.message})


def _whole(result: Collected, model: str, timing: Timing, chat: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"model": model, "created_at": _stamp()}
    if chat:
        message: dict[str, Any] = {"role": "assistant", "content": result.text}
        if result.tool_calls:
            message["tool_calls"] = _tool_calls(result.tool_calls)
        out["message"] = message
    else:
        out["response"] = result.text
    out.update(done=True, done_reason=_done_reason(result.finished))
    return {**out, **timing.fields(result.finished)}


async def _answer(
    request: Request,
    data: dict[str, Any],
    model: str,
    num_ctx: int | None,
    stream: bool,
    chat: bool,
    via_chat: bool = True,
) -> Response:
    """Serve ``data`` (as a chat request, or a completion for a raw prompt) and answer in
    ``/api/chat``'s shape (``chat``) or ``/api/generate``'s."""
    call, timing = await _served(request, data, model, num_ctx, via_chat)
    if stream:
        lines = _lines(call.primed, model, timing, chat)
        return StreamingResponse(lines, media_type=NDJSON, headers=call.headers)
    result = await unless_disconnected(request, collect(call.primed))
    return JSONResponse(_whole(result, model, timing, chat), headers=call.headers)


async def _load_only(request: Request, model: str, keep_alive: Any, chat: bool) -> Response:
    """No prompt: load the model (or, with ``keep_alive`` 0, unload it), as Ollama does."""
    state = get_state(request)
    get_record(request).model = model
    state.auth.permit(get_key(request), model)
    names = [n for n in _local_engines(state, model) if state.engines.find(n) is not None]
    if not names and model not in state.serving.router.aliases:
        raise ModelNotFound(model)
    try:
        keep = parse_keep_alive(keep_alive) if keep_alive is not None else False
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="keep_alive") from None
    reason = "unload" if keep == 0 else "load"
    for name in names[:1]:
        if reason == "unload":
            await state.engines.unload(name)
        else:
            await state.engines.acquire(name, keep_alive=keep)
            state.engines.release(name)
    out: dict[str, Any] = {"model": model, "created_at": _stamp()}
    if chat:
        out["message"] = {"role": "assistant", "content": ""}
    else:
        out["response"] = ""
    out.update(done=True, done_reason=reason)
    return JSONResponse(out, headers={LOCALITY: "local"})


@router.post("/api/chat")
async def chat(body: ChatRequest, request: Request) -> Response:
    """Chat (Ollama): NDJSON lines by default, one object with ``stream: false``."""
    if not body.messages:
        return await _load_only(request, body.model, body.keep_alive, chat=True)
    return await _answer(request, body.openai(), body.model, body.num_ctx, body.stream, True)


@router.post("/api/generate")
async def generate(body: GenerateRequest, request: Request) -> Response:
    """Generate from a prompt (Ollama); ``raw`` skips the chat template."""
    data = body.openai()
    if body.empty and not body.raw:
        return await _load_only(request, body.model, body.keep_alive, chat=False)
    return await _answer(
        request, data, body.model, body.num_ctx, body.stream, False, via_chat=not body.raw
    )


# -- models ------------------------------------------------------------------------


def _digest(path: Path, size: int, stamp: float) -> str:
    """A stable id for a model's files (their path, size and time; not a content hash)."""
    return hashlib.sha256(f"{path}:{size}:{stamp}".encode()).hexdigest()


def _facts(state: Services, engine: Engine) -> dict[str, Any]:
    """What Ollama's listings say of a local model, from its files and the store."""
    info = engine.info()
    path = Path(info.path)
    exists = path.exists()
    stored = ModelStore(state.settings.model_dir).find(info.id)
    manifest = stored.manifest if stored is not None else None
    known = describe(ModelSpec(info.id, path, info.engine), manifest) if exists else {}
    size = info.size_bytes or (manifest.size if manifest else 0)
    if not size and path.is_file():
        size = path.stat().st_size
    stamp = manifest.created if manifest else (path.stat().st_mtime if exists else state.started)
    gguf = info.engine == "llama.cpp"
    return {
        "name": info.id,
        "model": info.id,
        "modified_at": _stamp(stamp),
        "size": size,
        "digest": _digest(path, size, stamp),
        "details": {
            "parent_model": "",
            "format": "gguf" if gguf else info.engine,
            "family": str(known.get("architecture") or ""),
            "families": [known["architecture"]] if known.get("architecture") else None,
            "parameter_size": str(known.get("parameters") or ""),
            "quantization_level": str(info.quantization or known.get("quantization") or ""),
        },
        "_context": info.context_length,
        "_template": known.get("chat template") or "",
        "_params": manifest.params if manifest else {},
        "_license": known.get("license") or "",
        "_path": str(path),
    }


def _alias_facts(alias: Alias, state: Services) -> dict[str, Any]:
    stamp = _stamp(state.started)
    details = {"parent_model": "", "format": "alias", "family": "", "families": None,
               "parameter_size": "", "quantization_level": ""}  # fmt: skip
    digest = hashlib.sha256(alias.name.encode()).hexdigest()
    return {"name": alias.name, "model": alias.name, "modified_at": stamp, "size": 0,
            "digest": digest, "details": details}  # fmt: skip


def _public(facts: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in facts.items() if not k.startswith("_")}


def _find(state: Services, model: str) -> dict[str, Any]:
    alias = state.serving.router.aliases.get(model)
    engine = state.engines.find(model)
    if engine is not None:
        return _facts(state, engine)
    if alias is not None:
        local = _local_engines(state, model)
        found = state.engines.find(local[0]) if len(local) == 1 else None
        return (
            {**_facts(state, found), "name": model, "model": model}
            if found
            else (_alias_facts(alias, state))
        )
    raise ModelNotFound(model)


@router.get("/api/tags")
async def tags(request: Request) -> dict[str, Any]:
    """The chat models this server answers for (aliases and local models), Ollama's shape."""
    state = get_state(request)
    models = []
    for found in state.serving.models(get_key(request)):
        if isinstance(found, Engine):
            models.append(_public(_facts(state, found)))
        elif isinstance(found, Alias):
            models.append(_public(_find(state, found.name)))
    return {"models": models}


@router.post("/api/show")
async def show(body: ModelRequest, request: Request) -> dict[str, Any]:
    """One model: details, model_info (context length), template, parameters, capabilities."""
    state = get_state(request)
    model = body.id
    state.auth.permit(get_key(request), model)
    facts = _find(state, model)
    details = facts["details"]
    info: dict[str, Any] = {"general.architecture": details["family"] or "unknown"}
    if "_context" in facts:
        info[f"{details['family'] or 'unknown'}.context_length"] = facts["_context"]
    params = "\n".join(f"{k} {json.dumps(v)}" for k, v in (facts.get("_params") or {}).items())
    modelfile = f"# Modelfile of {model}, as ocak serves it\nFROM {facts.get('_path', model)}\n"
    modelfile += "".join(f"PARAMETER {line}\n" for line in params.splitlines())
    return {
        "modelfile": modelfile,
        "parameters": params,
        "template": facts.get("_template", ""),
        "license": facts.get("_license", ""),
        "details": details,
        "model_info": info,
        "capabilities": ["completion", "tools"],
        "modified_at": facts["modified_at"],
    }


@router.get("/api/ps")
async def ps(request: Request) -> dict[str, Any]:
    """The models loaded now, and until when they stay (``keep_alive``)."""
    state = get_state(request)
    key = get_key(request)
    models = []
    for engine in state.engines.ready:
        if key is not None and not key.allows(engine.model_id):
            continue
        facts = _facts(state, engine)
        res = state.engines.residency(engine.model_id)
        expires = NEVER
        vram = 0
        if res is not None:
            if res.expires_at is not None:
                expires = _stamp(res.expires_at)
            elif res.keep_alive is not None:  # in use now: the clock starts when it is idle
                expires = _stamp(time.time() + res.keep_alive)
            vram = res.resident if res.pool == "vram" else 0
        models.append({**_public(facts), "expires_at": expires, "size_vram": vram,
                       "context_length": facts["_context"]})  # fmt: skip
    return {"models": models}


@router.get("/api/version")
async def version() -> dict[str, str]:
    """The Ollama API version these routes follow, and ocak's own."""
    from ocak import __version__

    return {"version": OLLAMA_VERSION, "ocak": __version__}


@router.get("/", response_class=PlainTextResponse)
@router.head("/", response_class=PlainTextResponse, include_in_schema=False)
async def root(request: Request) -> Response:
    """What Ollama answers at its root (tools probe it to find a server); a browser,
    which asks for HTML, gets the web console instead."""
    if wants_console(request):
        return console_asset("index.html")
    return PlainTextResponse("Ollama is running")


@router.post("/api/embed")
async def embed(body: EmbedRequest, request: Request) -> JSONResponse:
    """Ollama's embeddings: ``input`` a text or a list; ``truncate`` (default true, as
    Ollama) cuts a text to the model's window, false makes it a 400."""
    started = time.monotonic()
    ctx = http_context(request)
    embedded = await get_state(request).embeddings.embed(
        ctx,
        model=body.model,
        inputs=body.inputs(),
        dimensions=body.dimensions,
        body=body.openai(),
        truncate=body.truncate,
    )
    found = _vectors(embedded, body.model)
    return JSONResponse(
        {
            "model": body.model,
            "embeddings": found.tolist(),
            "total_duration": int((time.monotonic() - started) * 1e9),
            "load_duration": 0,
            "prompt_eval_count": embedded.tokens,
        },
        headers=record_headers(ctx.record),
    )


@router.post("/api/embeddings")
async def embeddings(body: LegacyEmbedRequest, request: Request) -> JSONResponse:
    """Ollama's older embeddings route: one ``prompt``, one ``embedding``."""
    ctx = http_context(request)
    embedded = await get_state(request).embeddings.embed(
        ctx, model=body.model, inputs=[body.prompt], dimensions=None,
        body={"input": body.prompt}, truncate=True,
    )  # fmt: skip
    found = _vectors(embedded, body.model)
    return JSONResponse({"embedding": found[0].tolist()}, headers=record_headers(ctx.record))


def _vectors(embedded: Embedded, model: str) -> NDArray[np.float32]:
    """The vectors, also from a hosted upstream's OpenAI-shaped answer."""
    if embedded.vectors is not None:
        return embedded.vectors
    try:
        data = json.loads(embedded.raw or b"")["data"]
        return np.array([d["embedding"] for d in data], dtype=np.float32)
    except (ValueError, KeyError, TypeError):
        raise UpstreamBroken(f"the upstream of '{model}' sent no embeddings") from None


def _pull_line(event: dict[str, Any]) -> dict[str, Any]:
    """One of ocak's pull events in Ollama's words (the file name stands for the digest)."""
    if event["status"] == "resolving":
        return {"status": "pulling manifest"}
    if event["status"] == "verifying":
        return {"status": "verifying sha256 digest"}
    if event["status"] == "downloading":
        file = event["file"]
        return {
            "status": f"pulling {file}",
            "digest": file,
            "total": event["total"],
            "completed": event["completed"],
        }
    return {"status": event.get("detail") or event["status"]}


@router.post("/api/pull", dependencies=[Depends(require_admin)])
async def pull(body: PullRequest, request: Request) -> Response:
    """Pull ``hf.co/OWNER/REPO[:QUANT]`` from the Hugging Face Hub into the store, as Ollama
    pulls such names (administrator); progress as NDJSON lines unless ``stream`` is false."""
    name = body.id
    if "/" not in name:
        raise InvalidRequest(
            f"'{name}' is a name in Ollama's registry, which ocak does not pull from; pull a "
            "GGUF repository from the Hugging Face Hub as hf.co/OWNER/REPO[:QUANT].",
            param="model",
        )
    run = Pull(get_state(request), parse_ref(name))
    if not body.stream:
        await run.result()
        return JSONResponse({"status": "success"})
    first = await run.resolved()

    async def lines() -> AsyncIterator[bytes]:
        for event in first:
            yield _line(_pull_line(event))
        async for event in run.events():
            yield _line(_pull_line(event))
        try:
            run.task.result()
        except OcakError as exc:
            yield _line({"error": exc.message})
            return
        yield _line({"status": "writing manifest"})
        yield _line({"status": "success"})

    return StreamingResponse(lines(), media_type=NDJSON)
