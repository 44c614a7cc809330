"""Run the app under uvicorn; exit non-zero when no model could be loaded."""

from __future__ import annotations

import logging

import uvicorn

from ocak.config import Settings
from ocak.engines.registry import EngineRegistry
from ocak.server.app import create_app

log = logging.getLogger("ocak.server")


def run_server(settings: Settings, registry: EngineRegistry) -> int:
    """Serve until stopped; returns the process exit code."""
    exit_code = 0
    server: uvicorn.Server | None = None

    def on_fatal(reason: str) -> None:
        nonlocal exit_code
        exit_code = 1
        log.error("no model could be loaded: %s", reason)
        if server is not None:
            server.should_exit = True

    app = create_app(settings, registry, on_fatal=on_fatal)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=30,
    )
    server = uvicorn.Server(config)
    log.info("ocak listening on http://%s:%d (OpenAI API at /v1)", settings.host, settings.port)
    server.run()
    return exit_code
