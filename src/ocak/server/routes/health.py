"""Health probes: ``/health`` (readiness) and ``/health/live`` (liveness)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ocak.server.services import get_state

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    """Ready (200) once the start-up loads have run and a model given at start can answer:
    loaded, or unloaded while idle and loaded again by the next request. 503 while the
    start-up loads run, or when every model given at start failed to load. Whether each
    model is loaded now is in the list (and in ``/v1/models``)."""
    engines = get_state(request).engines
    models: list[dict[str, Any]] = []
    for e in engines:
        entry: dict[str, Any] = {"id": e.model_id, "engine": e.kind, "state": e.state}
        if e.error:
            entry["error"] = e.error
        if e.state == "ready":
            s = e.stats()
            entry.update(active=s.active, queued=s.queued, slots=s.slots)
        models.append(entry)
    if engines.loading:
        return JSONResponse({"status": "loading", "models": models}, status_code=503)
    if not engines.servable:
        detail = "; ".join(f"{e.model_id}: {e.error}" for e in engines.failed) or "no models"
        return JSONResponse(
            {"status": "error", "detail": detail, "models": models}, status_code=503
        )
    return JSONResponse({"status": "ok", "models": models})


@router.get("/health/live")
async def live() -> dict[str, str]:
    """200 whenever the process is up."""
    return {"status": "alive"}
