"""Knowledge bases over HTTP, through ``serving/knowledge.py``.

Reading (list, show, search) needs a key like any model request; changing them
(create, upload, delete) needs the administrator scope. Documents are uploaded in the
request as multipart files, never named as a path on the server's disk. Each file is
imported on its own: an unreadable or empty one is reported by name and skipped, and the
others are kept.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ocak.engines.embedding import BUNDLED_EMBEDDER
from ocak.errors import InvalidRequest, OcakError
from ocak.knowledge.store import DocInfo, Hit, KbInfo
from ocak.server.auth import require_admin
from ocak.server.proxy import http_context
from ocak.server.routes.admin import ERRORS
from ocak.server.services import get_state

router = APIRouter(tags=["knowledge"])
ADMIN = [Depends(require_admin)]


class CreateKb(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Letters, digits, '.', '_', '-'; at most 64.")
    model: str = Field(BUNDLED_EMBEDDER, description="The embedding model of its vectors.")


class SearchKb(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1)
    k: int = Field(5, ge=1, le=50)
    mode: Literal["hybrid", "vector", "keyword"] = "hybrid"


def kb_json(info: KbInfo, documents: list[DocInfo] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "object": "knowledge_base",
        "name": info.name,
        "model": info.model,
        "dimensions": info.dimensions,
        "created_at": int(info.created_at),
        "documents": info.documents,
        "chunks": info.chunks,
        "bytes": info.bytes,
    }
    if documents is not None:
        out["files"] = [
            {"source": d.source, "sha256": d.sha256, "size": d.size, "chunks": d.chunks,
             "added_at": int(d.added_at)}
            for d in documents
        ]  # fmt: skip
    return out


def hit_json(hit: Hit) -> dict[str, Any]:
    out: dict[str, Any] = {
        "chunk": hit.chunk_id,
        "source": hit.source,
        "heading": hit.heading,
        "start": hit.start,
        "end": hit.end,
        "score": hit.score,
        "vector_rank": hit.vector_rank,
        "keyword_rank": hit.keyword_rank,
        "text": hit.text,
    }
    if hit.page is not None:
        out["page"] = hit.page
    return out


@router.post("/v1/knowledge", status_code=201, responses=ERRORS, dependencies=ADMIN)
async def create(body: CreateKb, request: Request) -> dict[str, Any]:
    """A new, empty knowledge base (administrator)."""
    return kb_json(await get_state(request).knowledge.create(body.name, body.model))


@router.get("/v1/knowledge", responses=ERRORS)
async def list_bases(request: Request) -> dict[str, Any]:
    """The knowledge bases, with their document and chunk counts."""
    bases = await get_state(request).knowledge.bases()
    return {"object": "list", "data": [kb_json(b) for b in bases]}


@router.get("/v1/knowledge/{kb}", responses=ERRORS)
async def show(kb: str, request: Request) -> dict[str, Any]:
    """One knowledge base and its documents."""
    info, documents = await get_state(request).knowledge.info(kb)
    return kb_json(info, documents)


@router.delete("/v1/knowledge/{kb}", responses=ERRORS, dependencies=ADMIN)
async def remove(kb: str, request: Request) -> dict[str, Any]:
    """Delete a knowledge base and everything in it (administrator)."""
    await get_state(request).knowledge.remove(kb)
    return {"object": "knowledge_base", "name": kb, "deleted": True}


@router.post("/v1/knowledge/{kb}/documents", responses=ERRORS, dependencies=ADMIN)
async def upload(
    kb: str, request: Request, files: Annotated[list[UploadFile], File()]
) -> JSONResponse:
    """Import uploaded files (text, Markdown, HTML, PDF), each on its own: a changed file
    re-embeds only what changed; one that cannot be read is reported and skipped."""
    knowledge = get_state(request).knowledge
    await knowledge.info(kb)  # 404 before reading any file
    ctx = http_context(request)
    results: list[dict[str, Any]] = []
    for upload in files:
        source = upload.filename or ""
        try:
            if not source:
                raise InvalidRequest("Each file needs a file name.", param="files")
            done = await knowledge.add(ctx, kb, source, await upload.read())
        except OcakError as exc:
            if exc.status >= 500:
                raise
            results.append({"source": source, "status": "skipped", "error": exc.to_dict()})
            continue
        results.append(
            {"source": source, "status": done.status, "chunks": done.chunks,
             "embedded": done.embedded}
        )  # fmt: skip
    info, _ = await knowledge.info(kb)
    return JSONResponse({"results": results, "knowledge_base": kb_json(info)})


@router.delete("/v1/knowledge/{kb}/documents/{source:path}", responses=ERRORS, dependencies=ADMIN)
async def remove_document(kb: str, source: str, request: Request) -> dict[str, Any]:
    """Remove one document and its chunks (administrator)."""
    if not await get_state(request).knowledge.remove_document(kb, source):
        raise InvalidRequest(f"'{kb}' has no document '{source}'.", param="source")
    return {"source": source, "deleted": True}


@router.post("/v1/knowledge/{kb}/search", responses=ERRORS)
async def search(kb: str, body: SearchKb, request: Request) -> dict[str, Any]:
    """The best chunks for ``query``: hybrid (meaning and keywords, fused) by default."""
    ctx = http_context(request)
    hits = await get_state(request).knowledge.search(ctx, kb, body.query, body.k, body.mode)
    return {"object": "list", "data": [hit_json(h) for h in hits]}
