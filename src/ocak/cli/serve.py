"""``ocak serve``: the HTTP server on the local engines."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from ocak.cli.common import fail, fail_on, setup_logging
from ocak.config import Settings
from ocak.engines.factory import build_registry
from ocak.errors import OcakError

log = logging.getLogger("ocak.server")


def serve(
    model: list[str] = typer.Option(
        None, "--model", "-m", help="'default', a GGUF path, a store name, or NAME=PATH (repeat)."
    ),
    host: str = typer.Option(None, help="Address to listen on (default 127.0.0.1)."),
    port: int = typer.Option(None, help="HTTP port (default 8000)."),
    ctx_size: int = typer.Option(None, "--ctx-size", "-c", help="Context window per request."),
    threads: int = typer.Option(None, "--threads", "-t", help="CPU threads (default: all)."),
    parallel: int = typer.Option(None, "--parallel", "-np", help="Sequences decoded together."),
    max_queue: int = typer.Option(None, "--max-queue", help="Requests that may wait."),
    queue_timeout: float = typer.Option(None, "--queue-timeout", help="Seconds before 503."),
    config: Path = typer.Option(None, "--config", help="YAML settings file."),
    log_level: str = typer.Option(None, "--log-level", help="debug, info, warning, error."),
) -> None:
    """Start the OpenAI-compatible server."""
    try:
        settings = Settings.load(
            config,
            model=model or None,
            host=host,
            port=port,
            ctx_size=ctx_size,
            threads=threads,
            parallel=parallel,
            max_queue=max_queue,
            queue_timeout=queue_timeout,
            log_level=log_level,
        )
    except OcakError as exc:
        fail_on(exc, 2)
    setup_logging(settings.log_level)
    registry, problems = build_registry(settings)
    if not len(registry):
        fail("; ".join(problems) or "no model to serve")
    from ocak.server.runner import run_server

    code = run_server(settings, registry)
    if code:
        raise typer.Exit(code)
