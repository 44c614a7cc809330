"""Run the app under uvicorn; exit non-zero when no model could be loaded."""

from __future__ import annotations

import asyncio
import logging
import signal
from types import FrameType

import uvicorn

from ocak.config import Settings
from ocak.engines.registry import EngineRegistry
from ocak.server.app import app_for
from ocak.server.auth import check_exposure, is_loopback
from ocak.server.request_log import configure_access_log
from ocak.server.services import build_services

log = logging.getLogger("ocak.server")


def _stopped(signum: int, frame: FrameType | None) -> None:
    log.info("stopped by signal %d after a graceful shutdown", signum)


def warn_plain_http(settings: Settings, keys_on: bool) -> bool:
    """Warn (once, at start) when API keys would cross the network unencrypted."""
    if keys_on and settings.tls_cert is None and not is_loopback(settings.host):
        log.warning(
            "listening on %s over plain HTTP with API keys: keys and prompts cross the network "
            "unencrypted. Serve HTTPS with --tls-cert and --tls-key, or put a TLS proxy in front.",
            settings.host,
        )
        return True
    return False


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

    if settings.grpc_port is not None:
        from ocak.grpc.server import listen_address, port_problem

        problem = port_problem(settings.host, settings.grpc_port)
        if problem is not None:
            address = listen_address(settings.host, settings.grpc_port)
            log.error("cannot listen for gRPC on %s: %s", address, problem)
            return 1
    services = build_services(settings, registry)  # every part, the databases included
    try:
        check_exposure(settings, services.auth)  # no keys beyond loopback: refuse
    except BaseException:
        asyncio.run(services.close())
        raise
    app = app_for(services, on_fatal=on_fatal)  # its lifespan closes services at shutdown
    configure_access_log()
    warn_plain_http(settings, services.auth.enabled)
    tls = settings.tls_cert is not None
    config = uvicorn.Config(
        app,
        ssl_certfile=str(settings.tls_cert) if tls else None,
        ssl_keyfile=str(settings.tls_key) if tls else None,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=settings.shutdown_timeout,
    )
    server = uvicorn.Server(config)
    scheme = "https" if tls else "http"
    log.info(
        "ocak listening on %s://%s:%d (OpenAI API at /v1)", scheme, settings.host, settings.port
    )
    # uvicorn re-raises SIGTERM/SIGINT once its graceful shutdown is done, which would
    # kill the process by signal; with these handlers in place it returns and we exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stopped)
    try:
        server.run()
    finally:
        asyncio.run(services.close())  # a no-op once the lifespan closed them
    if not server.started:  # startup failed (e.g. the gRPC port is taken): uvicorn logged why
        exit_code = exit_code or 1
    return exit_code
