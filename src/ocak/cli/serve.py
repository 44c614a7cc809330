"""``ocak serve``: the HTTP server on the local engines."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from ocak.cli.common import fail, fail_on, setup_logging
from ocak.config import Settings
from ocak.engines.factory import build_registry
from ocak.errors import OcakError
from ocak.system.priority import set_priority

log = logging.getLogger("ocak.server")


def serve(
    model: list[str] = typer.Option(
        None, "--model", "-m", help="'default', a GGUF path, a store name, or NAME=PATH (repeat)."
    ),
    host: str = typer.Option(None, help="Address to listen on (default 127.0.0.1)."),
    port: int = typer.Option(None, help="HTTP port (default 8000)."),
    grpc_port: int = typer.Option(
        None, "--grpc-port", help="Also serve gRPC (ocak.v1) on this port, same host."
    ),
    ctx_size: int = typer.Option(None, "--ctx-size", "-c", help="Context window per request."),
    threads: int = typer.Option(None, "--threads", "-t", help="CPU threads (default: all)."),
    parallel: int = typer.Option(None, "--parallel", "-np", help="Sequences decoded together."),
    max_queue: int = typer.Option(None, "--max-queue", help="Requests that may wait."),
    queue_timeout: float = typer.Option(None, "--queue-timeout", help="Seconds before 503."),
    prefill_chunk: int = typer.Option(
        None, "--prefill-chunk", help="Prompt tokens per prefill chunk (default 128)."
    ),
    device: str = typer.Option(
        None, "--device", help="CTranslate2 models: auto, cpu or cuda (default auto)."
    ),
    allowed_host: list[str] = typer.Option(
        None, "--allowed-host", help="A host name to answer besides loopback ones (repeat)."
    ),
    allowed_origin: list[str] = typer.Option(
        None, "--allowed-origin", help="A web origin whose pages may call ocak (repeat)."
    ),
    tls_cert: Path = typer.Option(None, "--tls-cert", help="TLS certificate (PEM): HTTPS."),
    tls_key: Path = typer.Option(None, "--tls-key", help="TLS private key (PEM)."),
    max_memory: str = typer.Option(
        None, "--max-memory", help="Memory the loaded models may use, e.g. 6GiB (default: any)."
    ),
    max_vram: str = typer.Option(
        None, "--max-vram", help="GPU memory the models on a GPU may use, e.g. 20GiB."
    ),
    keep_alive: str = typer.Option(
        None, "--keep-alive", help="Idle time before a model is unloaded: 5m, 1h, 0, -1 (never)."
    ),
    priority: str = typer.Option(
        None, "--priority", help="normal, or low: a game beside ocak keeps its CPU."
    ),
    config: Path = typer.Option(None, "--config", help="YAML settings file."),
    log_level: str = typer.Option(None, "--log-level", help="debug, info, warning, error."),
    allow_no_keys: bool = typer.Option(
        False, "--allow-no-keys", help="Serve beyond loopback even with no API keys."
    ),
    metrics_public: bool = typer.Option(
        False, "--metrics-public", help="Serve /metrics without an API key."
    ),
    log_content: bool = typer.Option(
        False, "--log-content", help="Log prompts and completions (off: never logged)."
    ),
    store_content: bool = typer.Option(
        False, "--store-content", help="Store chat requests and answers (ocak usage export)."
    ),
    max_body_bytes: int = typer.Option(None, "--max-body-bytes", help="Largest request body."),
    max_messages: int = typer.Option(None, "--max-messages", help="Most messages per request."),
    max_tokens_limit: int = typer.Option(
        None, "--max-tokens-limit", help="Largest max_tokens, and the default when unset."
    ),
    shutdown_timeout: int = typer.Option(
        None, "--shutdown-timeout", help="Seconds streams may finish after SIGTERM."
    ),
    otlp_endpoint: str = typer.Option(
        None, "--otlp-endpoint", help="Send traces to this OTLP/HTTP receiver (docs/tracing.md)."
    ),
) -> None:
    """Start the OpenAI-compatible server."""
    try:
        settings = Settings.load(
            config,
            model=model or None,
            host=host,
            port=port,
            grpc_port=grpc_port,
            ctx_size=ctx_size,
            threads=threads,
            parallel=parallel,
            max_queue=max_queue,
            queue_timeout=queue_timeout,
            prefill_chunk=prefill_chunk,
            device=device,
            max_memory=max_memory,
            max_vram=max_vram,
            keep_alive=keep_alive,
            priority=priority,
            allowed_hosts=allowed_host or None,
            allowed_origins=allowed_origin or None,
            tls_cert=tls_cert,
            tls_key=tls_key,
            log_level=log_level,
            allow_no_keys=allow_no_keys or None,
            metrics_public=metrics_public or None,
            log_content=log_content or None,
            store_content=store_content or None,
            max_body_bytes=max_body_bytes,
            max_messages=max_messages,
            max_tokens_limit=max_tokens_limit,
            shutdown_timeout=shutdown_timeout,
            otlp_endpoint=otlp_endpoint,
        )
    except OcakError as exc:
        fail_on(exc, 2)
    setup_logging(settings.log_level)
    log.info("running at %s", set_priority(settings.priority))  # before any worker thread
    registry, problems = build_registry(settings)
    if not registry.startup:
        fail("; ".join(problems) or "no model to serve")
    from ocak.server.runner import run_server

    try:
        code = run_server(settings, registry)
    except OcakError as exc:  # the store cannot be opened, or no keys beyond loopback
        fail_on(exc, 2)
    if code:
        raise typer.Exit(code)
