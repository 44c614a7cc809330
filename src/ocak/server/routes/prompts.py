"""The prompt registry over HTTP (``/v1/prompts``), on ``serving/prompts.py``'s store.

Reading (list, show, a version, a label, a diff, a render preview, the export) needs a
key like any model request; changing the registry (a new version, moving a label, an
import) needs the administrator scope. A chat request uses a prompt with its ``prompt``
field (docs/prompts.md); these routes manage them.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from ocak.errors import InvalidRequest
from ocak.prompts.model import PromptInfo, Rendered, Version
from ocak.prompts.store import PromptStore
from ocak.server.auth import require_admin
from ocak.server.routes.admin import ERRORS
from ocak.server.services import get_state

router = APIRouter(tags=["prompts"])
MAX_VERSION = 2**31 - 1  # SQLite integers are 64-bit; no prompt has this many versions
VersionNumber = Annotated[int, Path(ge=1, le=MAX_VERSION)]
ADMIN = [Depends(require_admin)]


class CreateVersion(BaseModel):
    """A new prompt, or a new version of one (the latest, unchanged, when its content is
    the same)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="1-64 lowercase letters, digits, '.', '_' or '-'.")
    messages: list[dict[str, Any]] = Field(
        description="Chat messages whose content is a Jinja2 template."
    )
    variables: list[Any] | dict[str, Any] | None = Field(
        None, description="Declared variables: names, or {name, type, default} objects."
    )
    model: str | None = Field(None, description="The model this version is meant for.")
    params: dict[str, Any] | None = Field(None, description="temperature, max_tokens, ...")
    note: str | None = Field(None, max_length=2000, description="What changed, and why.")
    description: str | None = Field(None, max_length=2000, description="What it is for.")
    labels: list[str] = Field(default_factory=list, description="Labels to point at it.")


class SetLabel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(
        ge=1, le=MAX_VERSION, description="The version the label points at from now on."
    )


class RenderBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int | None = Field(None, ge=1, le=MAX_VERSION)
    label: str | None = None
    variables: dict[str, Any] = Field(default_factory=dict)


def version_json(v: Version, labels: dict[str, int] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"object": "prompt.version", "id": v.prompt, **v.to_dict()}
    if labels is not None:
        out["labels"] = sorted(name for name, n in labels.items() if n == v.version)
    return out


def prompt_json(info: PromptInfo) -> dict[str, Any]:
    return {
        "object": "prompt",
        "id": info.id,
        "description": info.description,
        "latest": info.latest,
        "labels": info.labels,
        "created_at": info.created_at,
    }


def rendered_json(r: Rendered) -> dict[str, Any]:
    return {
        "object": "prompt.rendered",
        "id": r.prompt,
        "version": r.version,
        "messages": r.chat_messages(),
        "model": r.model,
        "params": dict(r.params),
    }


def _store(request: Request) -> PromptStore:
    return get_state(request).prompts.store


@router.get("/v1/prompts", responses=ERRORS)
async def list_prompts(request: Request) -> dict[str, Any]:
    """Every prompt, with its latest version and labels."""
    found = await asyncio.to_thread(_store(request).list)
    return {"object": "list", "data": [prompt_json(p) for p in found]}


@router.post("/v1/prompts", status_code=201, responses=ERRORS, dependencies=ADMIN)
async def create(body: CreateVersion, request: Request) -> dict[str, Any]:
    """A new version (administrator); ``labels`` then point at it."""
    store = _store(request)

    def work() -> tuple[Version, dict[str, int]]:
        version = store.create(
            body.id, body.messages, body.variables, body.model, body.params, body.note,
            body.description,
        )  # fmt: skip
        for label in body.labels:
            store.label(body.id, label, version.version)
        return version, store.labels(body.id)

    version, labels = await asyncio.to_thread(work)
    return version_json(version, labels)


@router.get("/v1/prompts/export", responses=ERRORS)
async def export(request: Request, id: list[str] | None = Query(None)) -> dict[str, Any]:
    """Prompts (``?id=`` repeated; all by default) with every version and label, in the
    form ``POST /v1/prompts/import`` and ``ocak prompts import`` read."""
    return await asyncio.to_thread(_store(request).export, id)


@router.post("/v1/prompts/import", responses=ERRORS, dependencies=ADMIN)
async def import_(request: Request) -> dict[str, Any]:
    """Add what an export holds that the registry lacks, all or nothing (administrator);
    a version that differs from the one here is a conflict and nothing is written."""
    try:
        data = await request.json()
    except ValueError:
        raise InvalidRequest("The body must be an export, as JSON.") from None
    done = await asyncio.to_thread(_store(request).import_, data)
    return {
        "object": "prompts.import",
        "prompts_created": done.prompts_created,
        "versions_added": done.versions_added,
        "versions_unchanged": done.versions_unchanged,
        "labels_set": done.labels_set,
    }


@router.get("/v1/prompts/{prompt_id}", responses=ERRORS)
async def show(prompt_id: str, request: Request) -> dict[str, Any]:
    """A prompt's versions, oldest first, each with the labels pointing at it."""
    store = _store(request)

    def work() -> tuple[list[Version], dict[str, int]]:
        return store.versions(prompt_id), store.labels(prompt_id)

    versions, labels = await asyncio.to_thread(work)
    return {
        "object": "prompt",
        "id": prompt_id,
        "labels": labels,
        "versions": [version_json(v, labels) for v in versions],
    }


@router.get("/v1/prompts/{prompt_id}/versions/{version}", responses=ERRORS)
async def get_version(prompt_id: str, version: VersionNumber, request: Request) -> dict[str, Any]:
    """One version by number."""
    v = await asyncio.to_thread(_store(request).get, prompt_id, version=version)
    return version_json(v)


@router.get("/v1/prompts/{prompt_id}/labels/{label}", responses=ERRORS)
async def get_label(prompt_id: str, label: str, request: Request) -> dict[str, Any]:
    """The version a label (or ``latest``) points at now."""
    v = await asyncio.to_thread(_store(request).get, prompt_id, label=label)
    return version_json(v)


@router.put("/v1/prompts/{prompt_id}/labels/{label}", responses=ERRORS, dependencies=ADMIN)
async def set_label(prompt_id: str, label: str, body: SetLabel, request: Request) -> dict[str, Any]:
    """Point a label at a version, creating or moving it (administrator); the next request
    that names the label gets that version."""
    store = _store(request)

    def work() -> dict[str, int]:
        store.label(prompt_id, label, body.version)
        return store.labels(prompt_id)

    labels = await asyncio.to_thread(work)
    return {"object": "prompt.label", "id": prompt_id, "label": label,
            "version": body.version, "labels": labels}  # fmt: skip


@router.get("/v1/prompts/{prompt_id}/diff", responses=ERRORS)
async def diff(
    prompt_id: str,
    request: Request,
    a: int = Query(ge=1, le=MAX_VERSION),
    b: int = Query(ge=1, le=MAX_VERSION),
) -> dict[str, Any]:
    """A unified diff of two versions (their YAML)."""
    text = await asyncio.to_thread(_store(request).diff, prompt_id, a, b)
    return {"object": "prompt.diff", "id": prompt_id, "a": a, "b": b, "diff": text}


@router.post("/v1/prompts/{prompt_id}/render", responses=ERRORS)
async def render(prompt_id: str, body: RenderBody, request: Request) -> dict[str, Any]:
    """A version's messages rendered with ``variables``: what a chat request would get."""
    if body.version is not None and body.label is not None:
        raise InvalidRequest("Give a version or a label, not both.", param="version")
    done = await asyncio.to_thread(
        _store(request).render,
        prompt_id,
        body.variables,
        version=body.version,
        label=body.label,
    )
    return rendered_json(done)
