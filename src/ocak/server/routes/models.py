"""``GET /v1/models`` and ``GET /v1/models/{id}``: aliases and local models, loaded or not."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from ocak.engines.base import Engine
from ocak.engines.registry import Residency
from ocak.errors import ModelNotFound
from ocak.gateway.router import Alias
from ocak.protocol.openai import ModelCard, ModelList
from ocak.providers.base import LOCALITY
from ocak.server.auth import get_key
from ocak.server.routes.chat import ERRORS
from ocak.server.services import get_state

router = APIRouter(tags=["models"])


def card(engine: Engine, created: int, residency: Residency | None = None) -> ModelCard:
    """A local model: its engine, whether it is loaded now, and until when it stays."""
    info = engine.info()
    meta: dict[str, Any] = {
        "engine": info.engine,
        "context_length": info.context_length,
        "quantization": info.quantization,
        "size_bytes": info.size_bytes,
        "state": engine.state,
        "loaded": engine.state == "ready",
        "locality": "local",
    }
    if residency is not None:
        meta["keep_alive"] = residency.keep_alive  # seconds idle before unloading; null: never
        if engine.state == "ready":
            meta.update(
                resident_bytes=residency.resident,
                loaded_at=residency.loaded_at,
                expires_at=residency.expires_at,  # null while in use, or never
                in_flight=residency.inflight,
            )
    if engine.error:
        meta["error"] = engine.error
    return ModelCard(id=info.id, created=created, meta=meta)


def alias_card(alias: Alias, created: int) -> ModelCard:
    """An alias: where it may run and its targets' names (never a key or a URL)."""
    return ModelCard(
        id=alias.name,
        created=created,
        meta={
            "alias": True,
            "locality": alias.locality or "any",
            "targets": [t.name for t in alias.targets],
            "skipped": alias.skipped,  # left out at start: their key variable is unset
        },
    )


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    """The models this server can answer for: aliases, then the local engines; with a key
    restricted to some models, only those."""
    state = get_state(request)
    created = int(state.started)
    found = state.serving.models(get_key(request))
    return ModelList(
        data=[
            alias_card(m, created)
            if isinstance(m, Alias)
            else card(m, created, state.engines.residency(m.model_id))
            for m in found
        ]
    )


@router.get("/v1/models/{model_id:path}", response_model=ModelCard, responses=ERRORS)
async def get_model(model_id: str, request: Request, response: Response) -> ModelCard:
    """One model. ``x-ocak-locality: local`` says a local-only request for it can be served
    on this machine (another ocak checks that before sending one here)."""
    state = get_state(request)
    state.auth.permit(get_key(request), model_id)  # 403 for a key restricted to others
    created = int(state.started)
    alias = state.serving.router.aliases.get(model_id)
    if alias is not None:
        response.headers[LOCALITY] = "local" if alias.can_be_local() else "remote"
        return alias_card(alias, created)
    engine = state.engines.find(model_id)
    if engine is None:
        raise ModelNotFound(model_id)
    response.headers[LOCALITY] = "local"
    return card(engine, created, state.engines.residency(model_id))
