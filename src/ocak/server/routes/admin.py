"""Administrator routes: key management and deleting a player's data.

Every route here changes the machine or its configuration, so the router carries
``require_admin``: an administrator key once keys exist, loopback clients only
while none do. Later routes that change the machine (models, knowledge bases,
prompts, fine-tuning) join this router or carry the same dependency.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from ocak.characters.players import delete_player
from ocak.errors import Unavailable
from ocak.protocol.openai import ErrorResponse
from ocak.server.auth import require_admin
from ocak.server.routes.characters import get_service
from ocak.server.services import get_state
from ocak.store.db import Store
from ocak.store.keys import KeyInfo, create_key, list_keys, revoke_key
from ocak.store.usage import series, summarize
from ocak.system.doctor import run_checks

router = APIRouter(tags=["admin"], dependencies=[Depends(require_admin)])
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 413, 415, 503)
}


class KeyOut(BaseModel):
    """A key as listed: never the key itself."""

    name: str
    prefix: str
    admin: bool
    models: list[str] | None
    locality: str | None
    rpm: int | None
    tpm: int | None
    budget_tokens: int | None
    budget_period: float | None
    created_at: float
    revoked_at: float | None

    @classmethod
    def of(cls, info: KeyInfo) -> KeyOut:
        return cls(
            name=info.name,
            prefix=info.prefix,
            admin=info.admin,
            models=list(info.models) if info.models is not None else None,
            locality=info.locality,
            rpm=info.rpm,
            tpm=info.tpm,
            budget_tokens=info.budget_tokens,
            budget_period=info.budget_period,
            created_at=info.created_at,
            revoked_at=info.revoked_at,
        )


class KeyList(BaseModel):
    object: str = "list"
    data: list[KeyOut]


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    admin: bool = False
    models: list[str] | None = None
    locality: str | None = None
    rpm: int | None = Field(None, gt=0)
    tpm: int | None = Field(None, gt=0)
    budget_tokens: int | None = Field(None, gt=0)
    budget_period: float | None = Field(None, gt=0, description="Seconds.")


class CreatedKey(KeyOut):
    key: str = Field(description="The key itself: shown this once, ocak keeps a hash.")


class PlayerDeleted(BaseModel):
    player_id: str
    deleted: bool
    removed: dict[str, int] = Field(description="Rows removed, per table.")


def _keys_db(request: Request) -> Store:
    db = get_state(request).db
    if db is None:
        raise Unavailable("This server has no key store.")
    return db


@router.get("/v1/keys", response_model=KeyList, responses=ERRORS)
async def get_keys(request: Request, include_revoked: bool = False) -> KeyList:
    keys = list_keys(_keys_db(request), include_revoked=include_revoked)
    return KeyList(data=[KeyOut.of(k) for k in keys])


@router.post("/v1/keys", response_model=CreatedKey, responses=ERRORS, status_code=201)
async def post_key(body: NewKey, request: Request) -> CreatedKey:
    key, info = create_key(_keys_db(request), **body.model_dump())
    get_state(request).auth.refresh(force=True)
    return CreatedKey(**KeyOut.of(info).model_dump(), key=key)


@router.delete("/v1/keys/{name}", response_model=KeyOut, responses=ERRORS)
async def delete_key(name: str, request: Request) -> KeyOut:
    info = revoke_key(_keys_db(request), name)
    get_state(request).auth.refresh(force=True)
    return KeyOut.of(info)


@router.delete("/v1/players/{player_id}", response_model=PlayerDeleted, responses=ERRORS)
async def delete_player_data(player_id: str, request: Request) -> PlayerDeleted:
    """Delete every session, turn, memory, relationship and summary of this player."""
    service = get_service(request)
    counts = delete_player(service.db, player_id, service.recordings)
    service.forget_vectors()  # the recall-by-meaning cache held vectors of their lines
    return PlayerDeleted(player_id=player_id, deleted=any(counts.values()), removed=counts)


class UsageReport(BaseModel):
    """Usage records summed per group (``summary``) and per time bucket (``series``)."""

    object: str = "usage"
    by: str
    since: float
    bucket: float
    summary: list[dict[str, Any]]
    series: list[dict[str, Any]]


@router.get("/v1/usage", response_model=UsageReport, responses=ERRORS)
async def get_usage(
    request: Request,
    by: Literal["model", "key", "backend", "prompt"] = "model",
    hours: Annotated[float, Query(gt=0, le=24 * 366)] = 24,
    buckets: Annotated[int, Query(ge=1, le=500)] = 48,
) -> UsageReport:
    """Requests, tokens and latency over the last ``hours`` by model, key, backend or prompt
    version, in
    ``buckets`` time buckets (the console's charts; ``ocak usage`` prints the summary)."""
    db = _keys_db(request)
    since = time.time() - hours * 3600
    bucket = hours * 3600 / buckets
    return UsageReport(
        by=by, since=since, bucket=bucket,
        summary=[asdict(s) for s in summarize(db, by=by, since=since)],
        series=[asdict(p) for p in series(db, by=by, since=since, bucket=bucket)],
    )  # fmt: skip


@router.get("/v1/doctor", responses=ERRORS)
async def get_doctor(request: Request) -> dict[str, Any]:
    """``ocak doctor``'s report for this server's settings: the machine, its engines, and
    each known problem with its fix (the console's models page shows the findings)."""
    settings = get_state(request).settings
    report = await asyncio.to_thread(run_checks, settings)
    return report.as_dict()
