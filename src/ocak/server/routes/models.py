"""``GET /v1/models`` and ``GET /v1/models/{id}``: aliases and local models, loaded or not,
and the store's LoRA adapters (``kind: adapter``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from ocak.engines.base import Engine
from ocak.engines.registry import AdapterFile, Residency
from ocak.errors import ModelNotFound
from ocak.gateway.router import Alias
from ocak.protocol.openai import ModelCard, ModelList
from ocak.providers.base import LOCALITY
from ocak.server.auth import get_key
from ocak.server.routes.chat import ERRORS
from ocak.server.services import Services, get_state
from ocak.serving.audio import SpeechModel
from ocak.serving.embeddings import EmbeddingModel

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
                resident_in=residency.pool,  # memory, or vram (a GPU's, --max-vram)
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


def adapter_card(adapter: AdapterFile, created: int) -> ModelCard:
    """A stored LoRA adapter: the model it is for, and how a request names it."""
    size = adapter.path.stat().st_size if adapter.path.is_file() else None
    return ModelCard(
        id=adapter.name,
        created=created,
        kind="adapter",
        meta={
            "engine": "llama.cpp",
            "base": adapter.base,
            "size_bytes": size,
            "locality": "local",
            # the model name that applies it (the request field adapters also does)
            "use": adapter.name if adapter.base else f"BASE@{adapter.name}",
        },
    )


def speech_card(model: SpeechModel, voices: list[str], created: int) -> ModelCard:
    """A speech model (or OpenAI's name for it), with the voices of a speech one."""
    meta: dict[str, Any] = {"engine": model.engine, "locality": "local"}
    if model.kind == "text-to-speech":
        meta["voices"] = voices
    return ModelCard(id=model.id, created=created, kind=model.kind, meta=meta)


def embedding_card(model: EmbeddingModel, created: int) -> ModelCard:
    """An embedding model (or OpenAI's name for it); its dimensions once it has loaded."""
    meta: dict[str, Any] = {"engine": model.engine, "locality": "local"}
    if model.dimensions is not None:
        meta["dimensions"] = model.dimensions
    return ModelCard(id=model.id, created=created, kind="embedding", meta=meta)


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    """The models this server can answer for: aliases, then the local engines; with a key
    restricted to some models, only those."""
    state = get_state(request)
    created = int(state.started)
    key = get_key(request)
    voices = list(state.audio.catalog.voices)
    return ModelList(
        data=[_card(m, created, state) for m in state.serving.models(key)]
        + [speech_card(m, voices, created) for m in state.audio.models(key)]
        + [embedding_card(m, created) for m in state.embeddings.models(key)]
    )


def _card(found: Alias | Engine | AdapterFile, created: int, state: Services) -> ModelCard:
    if isinstance(found, Alias):
        return alias_card(found, created)
    if isinstance(found, Engine):
        return card(found, created, state.engines.residency(found.model_id))
    return adapter_card(found, created)


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
    response.headers[LOCALITY] = "local"
    if engine is not None:
        return card(engine, created, state.engines.residency(model_id))
    adapter = state.engines.adapter(model_id)
    if adapter is None:
        raise ModelNotFound(model_id)
    return adapter_card(adapter, created)
