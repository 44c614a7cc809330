"""Changing the models over HTTP: ``POST /v1/models/pull``, ``POST /v1/models/{id}/load``
and ``/unload``, ``DELETE /v1/models/{id}``.

Each changes the machine, so each needs the administrator scope. A pull runs in a
worker thread (``models/hub.py``); with ``stream`` (the default, like Ollama's
``/api/pull``) its progress arrives as server-sent events, one JSON object each:
``{"status": "downloading", "file": ..., "completed": ..., "total": ...}``, then
``{"status": "success", "model": ...}``, or an ``{"error": ...}`` event in
OpenAI's error shape. A client that leaves does not stop the pull: the next pull
of the same name finds the model, or resumes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ocak.errors import OcakError
from ocak.models.hub import Hub, HubRef, Progress, parse_ref, pull
from ocak.models.manifest import Manifest
from ocak.models.store import ModelStore
from ocak.protocol.openai import ModelCard
from ocak.server.auth import require_admin
from ocak.server.routes.admin import ERRORS
from ocak.server.routes.models import card
from ocak.server.services import Services, get_state
from ocak.server.streaming import SSE_HEADERS, sse, sse_error

router = APIRouter(tags=["models"], dependencies=[Depends(require_admin)])
_EVERY = 0.25  # seconds between two progress events of one file


class PullRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="OWNER/REPO, optionally :QUANT or :FILE.gguf.")
    revision: str = Field("main", max_length=200, description="A branch, tag or commit.")
    stream: bool = Field(True, description="Progress as server-sent events.")
    base: str | None = Field(
        None, max_length=200, description="For a LoRA adapter: the model it applies to."
    )


class Pulled(BaseModel):
    status: str = "success"
    model: str
    engine: str
    kind: str
    size: int
    revision: str | None


class ModelDeleted(BaseModel):
    id: str
    object: str = "model"
    deleted: bool = True


def _pulled(manifest: Manifest) -> Pulled:
    return Pulled(
        model=manifest.name,
        engine=manifest.engine,
        kind=manifest.kind,
        size=manifest.size,
        revision=manifest.source.revision if manifest.source else None,
    )


def _event(p: Progress) -> dict[str, Any]:
    event: dict[str, Any] = {"status": p.stage}
    if p.file is not None:
        event.update(file=p.file, completed=p.completed, total=p.total)
    if p.detail:
        event["detail"] = p.detail
    return event


async def _run_pull(
    state: Services, ref: HubRef, queue: asyncio.Queue[Any], base: str | None
) -> Manifest:
    """The pull in a worker thread; its progress (throttled per file) into ``queue``."""
    loop = asyncio.get_running_loop()
    last: dict[str | None, float] = {}

    def report(p: Progress) -> None:
        now = time.monotonic()
        done = p.total is not None and p.completed >= p.total
        if p.stage == "downloading" and not done and now - last.get(p.file, 0.0) < _EVERY:
            return
        last[p.file] = now
        loop.call_soon_threadsafe(queue.put_nowait, _event(p))

    store = ModelStore(state.settings.model_dir)
    hub = Hub(state.settings.hf_endpoint)
    return await asyncio.to_thread(pull, ref, store, hub, report=report, base=base)


@router.post("/v1/models/pull", response_model=Pulled, responses=ERRORS)
async def pull_model(body: PullRequest, request: Request) -> Any:
    """Download a model from the Hugging Face Hub into the store (administrator)."""
    state = get_state(request)
    ref = parse_ref(body.model, body.revision)  # 400 for a bad reference, before a stream
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    task = asyncio.ensure_future(_run_pull(state, ref, queue, body.base))
    state.background.add(task)  # held: the pull goes on if the client leaves
    task.add_done_callback(state.background.discard)
    if not body.stream:
        return _pulled(await asyncio.shield(task))
    # Until the repo is resolved, a failure (no such repo, no network) is the response's own
    # status; after that it is an error event.
    first = [event async for event in _events(task, queue, until_resolved=True)]
    if task.done() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]

    async def frames() -> AsyncIterator[bytes]:
        for event in first:
            yield sse(event)
        async for event in _events(task, queue):
            yield sse(event)
        try:
            manifest = task.result()
        except OcakError as exc:
            yield sse_error(exc)
            return
        yield sse(_pulled(manifest).model_dump())

    return StreamingResponse(frames(), media_type="text/event-stream", headers=SSE_HEADERS)


async def _events(
    task: asyncio.Future[Manifest],
    queue: asyncio.Queue[dict[str, Any]],
    until_resolved: bool = False,
) -> AsyncIterator[dict[str, Any]]:
    """Progress events as they come, until the pull ends (or, with ``until_resolved``,
    until the first event past resolving); the final success is left to the caller."""
    while not task.done() or not queue.empty():
        getter: asyncio.Future[Any] = asyncio.ensure_future(queue.get())
        waiting: set[asyncio.Future[Any]] = {getter, task}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if not getter.done():
            getter.cancel()
            continue
        event = getter.result()
        if event["status"] != "success":
            yield event
        if until_resolved and event["status"] != "resolving":
            return


class Unloaded(BaseModel):
    id: str
    object: str = "model"
    unloaded: bool = Field(description="False when the model was not loaded.")


@router.post("/v1/models/{model_id:path}/load", response_model=ModelCard, responses=ERRORS)
async def load_model(model_id: str, request: Request) -> ModelCard:
    """Load a model now (administrator); it then stays for its keep_alive."""
    state = get_state(request)
    engine = await state.engines.load(model_id)
    return card(engine, int(state.started), state.engines.residency(model_id))


@router.post("/v1/models/{model_id:path}/unload", response_model=Unloaded, responses=ERRORS)
async def unload_model(model_id: str, request: Request) -> Unloaded:
    """Unload a model (administrator) once its requests in flight have finished; a request
    that arrives meanwhile waits and loads it again."""
    state = get_state(request)
    return Unloaded(id=model_id, unloaded=await state.engines.unload(model_id))


@router.delete("/v1/models/{model_id:path}", response_model=ModelDeleted, responses=ERRORS)
async def delete_model(model_id: str, request: Request) -> ModelDeleted:
    """Delete a model from the store (administrator); a loaded one is unloaded first, once
    its requests in flight have finished."""
    state = get_state(request)
    store = ModelStore(state.settings.model_dir)
    store.get(model_id)  # 404 before anything is unloaded
    await state.engines.forget(model_id)
    removed = store.remove(model_id)
    return ModelDeleted(id=removed.name)
