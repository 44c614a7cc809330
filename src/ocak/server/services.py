"""Wire keys, limits, usage records, metrics, the request log and input caps into an app.

Record sinks run in this order before a response's last byte: the usage row
(committed), the key's token charge, metrics, the log line. Middleware, outer
to inner: request tracking (app.py), auth (401), body limit (413), content
capture (only with ``log_content``), then the app.
"""

from __future__ import annotations

from fastapi import FastAPI

from ocak.server import metrics
from ocak.server.accounting import Accounting
from ocak.server.auth import OPEN_PATHS, Authenticator, AuthMiddleware, keys_required
from ocak.server.middleware import BodyLimit
from ocak.server.request_log import ContentCapture, RequestLog
from ocak.server.state import AppState
from ocak.store.db import Database


def install(app: FastAPI, state: AppState, db: Database | None) -> None:
    """Call after the innermost middleware and before request tracking is added."""
    settings = state.settings
    state.db = db
    state.auth = Authenticator(db, required=keys_required(settings))
    state.metrics = metrics.Metrics(state.engines)
    state.sinks[:0] = [
        Accounting(db, state.auth),
        state.metrics.observe,
        RequestLog(log_content=settings.log_content),
    ]
    if settings.log_content:
        app.add_middleware(ContentCapture)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    open_paths = OPEN_PATHS | ({"/metrics"} if settings.metrics_public else set())
    app.add_middleware(AuthMiddleware, auth=state.auth, open_paths=frozenset(open_paths))
    app.include_router(metrics.router)
