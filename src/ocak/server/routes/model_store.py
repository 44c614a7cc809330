"""Changing the models over HTTP: ``POST /v1/models/pull``, ``POST /v1/models/{id}/load``
and ``/unload``, ``DELETE /v1/models/{id}``.

Each changes the machine, so each needs the administrator scope. A pull runs in a
worker thread (``server/pulls.py``); with ``stream`` (the default, like Ollama's
``/api/pull``) its progress arrives as server-sent events, one JSON object each:
``{"status": "downloading", "file": ..., "completed": ..., "total": ...}``, then
``{"status": "success", "model": ...}``, or an ``{"error": ...}`` event in
OpenAI's error shape. A client that leaves does not stop the pull: the next pull
of the same name finds the model, or resumes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ocak.errors import OcakError
from ocak.models.hub import parse_ref
from ocak.models.manifest import Manifest
from ocak.models.store import ModelStore
from ocak.protocol.openai import ModelCard
from ocak.server.auth import require_admin
from ocak.server.pulls import Pull
from ocak.server.routes.admin import ERRORS
from ocak.server.routes.models import card
from ocak.server.services import get_state
from ocak.server.streaming import SSE_HEADERS, sse, sse_error

router = APIRouter(tags=["models"], dependencies=[Depends(require_admin)])


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


@router.post("/v1/models/pull", response_model=Pulled, responses=ERRORS)
async def pull_model(body: PullRequest, request: Request) -> Any:
    """Download a model from the Hugging Face Hub into the store (administrator)."""
    ref = parse_ref(body.model, body.revision)  # 400 for a bad reference, before a stream
    run = Pull(get_state(request), ref, body.base)
    if not body.stream:
        return _pulled(await run.result())
    # Until the repo is resolved, a failure (no such repo, no network) is the response's own
    # status; after that it is an error event.
    first = await run.resolved()

    async def frames() -> AsyncIterator[bytes]:
        for event in first:
            yield sse(event)
        async for event in run.events():
            yield sse(event)
        try:
            manifest = run.task.result()
        except OcakError as exc:
            yield sse_error(exc)
            return
        yield sse(_pulled(manifest).model_dump())

    return StreamingResponse(frames(), media_type="text/event-stream", headers=SSE_HEADERS)


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
