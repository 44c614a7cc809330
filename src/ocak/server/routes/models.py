"""``GET /v1/models`` and ``GET /v1/models/{id}``."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ocak.engines.base import Engine
from ocak.errors import ModelNotFound
from ocak.protocol.openai import ModelCard, ModelList
from ocak.server.routes.chat import ERRORS
from ocak.server.state import get_state

router = APIRouter(tags=["models"])


def card(engine: Engine, created: int) -> ModelCard:
    info = engine.info()
    return ModelCard(
        id=info.id,
        created=created,
        meta={
            "engine": info.engine,
            "context_length": info.context_length,
            "quantization": info.quantization,
            "size_bytes": info.size_bytes,
            "state": engine.state,
            "locality": "local",
        },
    )


@router.get("/v1/models", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    """The models this server can answer for."""
    state = get_state(request)
    return ModelList(data=[card(e, int(state.started)) for e in state.engines])


@router.get("/v1/models/{model_id:path}", response_model=ModelCard, responses=ERRORS)
async def get_model(model_id: str, request: Request) -> ModelCard:
    state = get_state(request)
    engine = state.engines.find(model_id)
    if engine is None:
        raise ModelNotFound(model_id)
    return card(engine, int(state.started))
