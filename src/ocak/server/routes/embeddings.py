"""``POST /v1/embeddings`` (OpenAI-compatible), through ``serving/embeddings.py``: the
bundled embedder, or a gateway alias's targets. The response says which target served
(``x-ocak-backend``) and where (``x-ocak-locality``); a hosted answer comes back as the
upstream wrote it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from ocak.protocol.embeddings import EmbeddingRequest, embedding_list
from ocak.server.proxy import http_context, record_headers
from ocak.server.routes.chat import ERRORS
from ocak.server.services import get_state

router = APIRouter(tags=["embeddings"])


@router.post("/v1/embeddings", responses=ERRORS)
async def embeddings(body: EmbeddingRequest, request: Request) -> Response:
    """One unit vector per input (floats, or base64 of little-endian float32)."""
    ctx = http_context(request)
    sent: dict[str, Any] = body.model_dump(exclude_unset=True, exclude={"model"})
    embedded = await get_state(request).embeddings.embed(
        ctx, model=body.model, inputs=body.inputs(), dimensions=body.dimensions, body=sent
    )
    headers = record_headers(ctx.record)
    if embedded.raw is not None:
        return Response(embedded.raw, media_type=embedded.media_type, headers=headers)
    assert embedded.vectors is not None
    answer = embedding_list(embedded.vectors, body.model, embedded.tokens, body.encoding_format)
    return JSONResponse(answer, headers=headers)
