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
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from ocak import __version__
from ocak.config import Settings
from ocak.engines.registry import EngineRegistry
from ocak.gateway.service import Gateway
from ocak.protocol.record import Sink
from ocak.server import content, errors, stack
from ocak.server.middleware import AssumeJson
from ocak.server.routes import (
    admin,
    anthropic,
    audio,
    characters,
    chat,
    completions,
    console,
    embeddings,
    fine_tuning,
    health,
    knowledge,
    kobold,
    llama_server,
    metrics,
    model_store,
    models,
    ollama,
    prompts,
    voice,
)
from ocak.server.services import Services, build_services
from ocak.server.tracking import RequestTracking
from ocak.server.tuning_eval import in_process_evaluator
from ocak.store.db import Store

log = logging.getLogger("ocak.server")

FatalHook = Callable[[str], None]


def create_app(
    settings: Settings,
    engines: EngineRegistry,
    *,
    on_fatal: FatalHook | None = None,
    sinks: list[Sink] | None = None,
    db: Store | None = None,
    gateway: Gateway | None = None,
) -> FastAPI:
    """An app over services built here (tests: ``db`` None means no usage store)."""
    services = build_services(settings, engines, db=db, sinks=sinks, gateway=gateway)
    return app_for(services, on_fatal=on_fatal)


def app_for(services: Services, *, on_fatal: FatalHook | None = None) -> FastAPI:
    """The HTTP app over ``services``: it loads the engines in the background, starts gRPC
    beside it when a port is set, and closes ``services`` at shutdown."""
    settings, engines = services.settings, services.engines

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        grpc = None
        if settings.grpc_port is not None:
            from ocak.grpc.server import GrpcServer  # gRPC only when asked for

            grpc = GrpcServer(
                services, settings.host, settings.grpc_port, grace=settings.shutdown_timeout
            )
            await grpc.start()  # health NOT_SERVING until the models below are loaded

        async def load() -> None:
            await engines.load_all()
            if grpc is not None:
                await grpc.engines_changed()
            if not engines.servable and on_fatal is not None:
                on_fatal("; ".join(f"{e.model_id}: {e.error}" for e in engines.failed))
            # What start-up made lives as long as the process: out of the collector's sight.
            # A full collection over it took ~50 ms here (~100k objects), a stall for every
            # request in flight; after the freeze it takes well under a millisecond.
            gc.freeze()

        loader = asyncio.create_task(load())
        # Stored content past content_retention is deleted now and then hourly.
        retention = content.retention_task(services.db, settings.content_retention)
        services.tuning.start()  # a restart fails the job it interrupted; the queue runs
        services.gateway.start()  # upstream replicas' health checks
        try:
            yield
        finally:
            loader.cancel()
            await content.stop(retention)
            if grpc is not None:
                await grpc.stop()  # its streams end before the engines close
            await services.close()  # engines, providers' client, both databases

    app = FastAPI(
        title="ocak",
        version=__version__,
        description="Local-first LLM service with an OpenAI-compatible API.",
        lifespan=lifespan,
    )
    app.state.ocak = services
    services.tuning.evaluator = in_process_evaluator(app, services.auth)  # a job's eval
    errors.install(app)
    app.add_middleware(AssumeJson)
    stack.install(app, services)  # keys, web guard, body limit, content capture
    # Outermost: sees every request, including ones other middleware refuse.
    app.add_middleware(
        RequestTracking,
        sinks=services.sinks,
        late_sinks=services.late_sinks,
        tracing=services.tracing,
    )
    routes = (
        chat, completions, embeddings, knowledge, prompts, fine_tuning, audio, model_store,
        models, health, characters, voice, admin, metrics, ollama, anthropic, kobold, llama_server,
        console,
    )  # fmt: skip
    for module in routes:
        app.include_router(module.router)
    return app
