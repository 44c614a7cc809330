"""The FastAPI application factory.

Engines are injected (built by the caller from settings, or given by tests) and
loaded in the background by the lifespan, so ``/health`` answers 503 while they
load. When none loads, ``on_fatal`` is called with the reason so ``ocak serve``
can exit non-zero.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from ocak import __version__
from ocak.config import Settings
from ocak.engines.registry import EngineRegistry
from ocak.gateway.service import Gateway, build_gateway
from ocak.protocol.record import Sink
from ocak.server import errors, services
from ocak.server.middleware import AssumeJson
from ocak.server.routes import admin, characters, chat, completions, health, models
from ocak.server.routes.characters import close_characters
from ocak.server.state import AppState
from ocak.server.tracking import RequestTracking
from ocak.serving.service import ModelServing
from ocak.store.db import Database

log = logging.getLogger("ocak.server")

FatalHook = Callable[[str], None]


def create_app(
    settings: Settings,
    engines: EngineRegistry,
    *,
    on_fatal: FatalHook | None = None,
    sinks: list[Sink] | None = None,
    db: Database | None = None,
    gateway: Gateway | None = None,
) -> FastAPI:
    state = AppState(settings=settings, engines=engines, started=time.time())
    state.sinks = list(sinks or [])
    # Aliases and providers from the settings (ConfigError names a bad reference's line).
    state.gateway = gw = gateway or build_gateway(settings, engines)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        grpc = None
        if settings.grpc_port is not None:
            from ocak.grpc.server import GrpcServer  # gRPC only when asked for

            grpc = GrpcServer(
                state, settings.host, settings.grpc_port, grace=settings.shutdown_timeout
            )
            await grpc.start()  # health NOT_SERVING until the models below are loaded

        async def load() -> None:
            await engines.load_all()
            if grpc is not None:
                await grpc.engines_changed()
            if not engines.ready and on_fatal is not None:
                on_fatal("; ".join(f"{e.model_id}: {e.error}" for e in engines.failed))
            # What start-up made lives as long as the process: out of the collector's sight.
            # A full collection over it took ~50 ms here (~100k objects), a stall for every
            # request in flight; after the freeze it takes well under a millisecond.
            gc.freeze()

        loader = asyncio.create_task(load())
        try:
            yield
        finally:
            loader.cancel()
            if grpc is not None:
                await grpc.stop()  # its streams end before the engines close
            await engines.close_all()
            await gw.close()  # the providers' shared HTTP client
            close_characters(state)  # checkpoints characters.db's WAL into the file

    app = FastAPI(
        title="ocak",
        version=__version__,
        description="Local-first LLM service with an OpenAI-compatible API.",
        lifespan=lifespan,
    )
    app.state.ocak = state
    errors.install(app)
    app.add_middleware(AssumeJson)
    # Keys, limits, usage records, metrics, request log, body limit (issue 6).
    services.install(app, state, db)
    state.serving = ModelServing(settings, state.auth, engines, gw.router)
    if state.metrics is not None:  # aliases are model names too, in the metrics' labels
        state.metrics.known = gw.knows
    # Outermost: sees every request, including ones other middleware refuse.
    app.add_middleware(RequestTracking, sinks=state.sinks, late_sinks=state.late_sinks)
    for module in (chat, completions, models, health, characters, admin):
        app.include_router(module.router)
    return app
