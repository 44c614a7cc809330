"""``ocak usage``: requests and tokens by key, model or backend, from the usage records;
``ocak usage export``: stored requests and answers (``store_content``) as chat-format JSONL;
``ocak usage purge``: delete stored content."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path

import typer
from rich.table import Table

from ocak.cli.common import err_console, fail, fail_on, wide_console
from ocak.cli.keys import CONFIG, format_duration, open_store, parse_duration
from ocak.config import Settings
from ocak.errors import InvalidRequest, OcakError
from ocak.server.content import purge_expired
from ocak.store.backend import open_store as open_backend
from ocak.store.content import chat_line, content_count, purge_content, stored_content
from ocak.store.db import Store
from ocak.store.usage import GROUPS, summarize


def parse_since(text: str, now: float | None = None) -> float:
    """``1h``/``7d`` ago, or an ISO date or date-time (local time)."""
    now = time.time() if now is None else now
    try:
        return now - parse_duration(text)
    except InvalidRequest:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise InvalidRequest(
            f"--since '{text}' is neither a duration (30m, 12h, 7d) nor a date (2025-01-31)"
        ) from None


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


app = typer.Typer(
    help="Summarise the usage records (requests, outcomes, tokens and latency per group); "
    "export or purge the requests stored with them."
)


@app.callback(invoke_without_command=True)
def usage(
    ctx: typer.Context,
    since: str = typer.Option(None, "--since", help="30m, 24h, 7d, or a date (2025-01-31)."),
    by: str = typer.Option("model", "--by", help="Group by key, model or backend."),
    config: Path = CONFIG,
) -> None:
    """Summarise the usage records: requests, outcomes, tokens and latency per group."""
    if ctx.invoked_subcommand is not None:
        return
    if by not in GROUPS:
        fail_on(InvalidRequest(f"--by must be one of {', '.join(GROUPS)}"), 2)
    try:
        start = parse_since(since) if since else None
    except OcakError as exc:
        fail_on(exc, 2)
    db = open_store(config)
    try:
        rows = summarize(db, by=by, since=start)
    finally:
        db.close()
    if not rows:
        err_console.print("No usage records" + (f" since {since}." if since else "."))
        return
    table = Table(title="usage" + (f" since {since}" if since else ""))
    table.add_column(by, overflow="fold")
    for header in ("requests", "completed", "failed", "cancelled", "rejected"):
        table.add_column(header, justify="right")
    for header in ("prompt tokens", "completion tokens", "avg ttft ms", "avg total ms"):
        table.add_column(header, justify="right")
    totals = [0] * 7
    for r in rows:
        counts = [
            r.requests,
            r.completed,
            r.failed,
            r.cancelled,
            r.rejected,
            r.prompt_tokens,
            r.completion_tokens,
        ]
        totals = [a + b for a, b in zip(totals, counts, strict=True)]
        table.add_row(r.group, *(f"{n:,}" for n in counts), _ms(r.avg_ttft_ms), _ms(r.avg_total_ms))
    if len(rows) > 1:
        table.add_section()
        table.add_row("total", *(f"{n:,}" for n in totals), "", "", style="bold")
    wide_console().print(table)


@app.command("export")
def export(
    since: str = typer.Option(
        None, "--since", help="30m, 24h, 7d, or a date (default: all that is kept)."
    ),
    fmt: str = typer.Option("jsonl", "--format", help="jsonl: OpenAI's chat format."),
    output: Path = typer.Option(None, "--output", "-o", help="File to write (default: stdout)."),
    model: str = typer.Option(None, "--model", help="Only requests to this model (or alias)."),
    metadata: bool = typer.Option(
        True, "--metadata/--no-metadata", help="A metadata object on each line (request id, ...)."
    ),
    config: Path = CONFIG,
) -> None:
    """Write stored requests and answers as chat-format JSONL (eval cases, fine-tuning).

    Only what store_content kept, within content_retention; no key names or ids, and
    secrets were redacted when stored.
    """
    if fmt != "jsonl":
        fail_on(InvalidRequest(f"--format '{fmt}' is not known: use jsonl"), 2)
    try:
        start = parse_since(since) if since else None
    except OcakError as exc:
        fail_on(exc, 2)
    settings, db = _open(config)
    try:
        purge_expired(db, settings.content_retention)  # never export what is past retention
        kept = content_count(db)
        written = _write(db, output, start, model, metadata) if kept else 0
    finally:
        db.close()
    if not kept:
        err_console.print(_nothing_stored(settings), markup=False, highlight=False)
        return
    if not written:
        where = (f" since {since}" if since else "") + (f" for model '{model}'" if model else "")
        err_console.print(
            f"No stored requests{where} ({kept:,} stored in all).", markup=False, highlight=False
        )
        return
    to = str(output) if output else "stdout"
    err_console.print(
        f"Wrote {written:,} requests as chat-format JSONL to {to}.", markup=False, highlight=False
    )


def _open(config: Path | None) -> tuple[Settings, Store]:
    try:
        settings = Settings.load(config)
        return settings, open_backend(settings)
    except OcakError as exc:
        fail_on(exc, 2)


def _nothing_stored(settings: Settings) -> str:
    keep = format_duration(settings.content_retention)
    if not settings.store_content:
        return (
            "No stored requests: content storage is off (store_content: false, the default), "
            "so usage records hold no prompts or answers. Set store_content: true (the "
            f"operator's consent) and restart the server; stored requests are kept {keep}."
        )
    return (
        "No stored requests yet: store_content is on; completed chat requests are stored "
        f"from the server's start with it and kept {keep}."
    )


def _write(
    db: Store, output: Path | None, since: float | None, model: str | None, metadata: bool
) -> int:
    """The lines, to ``output`` (written beside it, then renamed: never half a file) or
    stdout; how many."""
    rows = stored_content(db, since=since, model=model)
    if output is None:  # ASCII escapes: whatever the terminal's encoding
        n = 0
        for x in rows:
            sys.stdout.write(json.dumps(chat_line(x, metadata=metadata)) + "\n")
            n += 1
        sys.stdout.flush()
        return n
    part = output.with_name(output.name + ".part")
    try:
        with part.open("w", encoding="utf-8", errors="backslashreplace") as f:
            n = 0
            for x in rows:
                f.write(json.dumps(chat_line(x, metadata=metadata), ensure_ascii=False) + "\n")
                n += 1
        if n:
            part.replace(output)
        else:
            part.unlink()
    except OSError as exc:
        part.unlink(missing_ok=True)
        fail(f"cannot write {output}: {exc.strerror or exc}")
    return n


@app.command("purge")
def purge(
    everything: bool = typer.Option(
        False, "--all", help="Delete all stored content, not only what is past its retention."
    ),
    config: Path = CONFIG,
) -> None:
    """Delete stored requests and answers past content_retention (or all, with --all).

    Usage records stay. A running server also deletes expired ones hourly.
    """
    settings, db = _open(config)
    try:
        gone = purge_content(db) if everything else purge_expired(db, settings.content_retention)
    finally:
        db.close()
    err_console.print(f"Deleted {gone:,} stored requests.", highlight=False)
