"""``ocak usage``: requests and tokens by key, model or backend, from the usage records."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import typer
from rich.table import Table

from ocak.cli.common import err_console, fail_on, wide_console
from ocak.cli.keys import CONFIG, open_store, parse_duration
from ocak.errors import InvalidRequest, OcakError
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


def usage(
    since: str = typer.Option(None, "--since", help="30m, 24h, 7d, or a date (2025-01-31)."),
    by: str = typer.Option("model", "--by", help="Group by key, model or backend."),
    config: Path = CONFIG,
) -> None:
    """Summarise the usage records: requests, outcomes, tokens and latency per group."""
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
