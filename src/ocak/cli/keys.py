"""``ocak keys``: create, list and revoke API keys (the key is printed once)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import typer
from rich.table import Table

from ocak.cli.common import err_console, fail_on, wide_console
from ocak.config import Settings
from ocak.errors import InvalidRequest, OcakError
from ocak.store.backend import open_store as open_backend
from ocak.store.db import Store
from ocak.store.keys import create_key, list_keys, revoke_key
from ocak.store.usage import tokens_used

app = typer.Typer(help="Manage API keys.", no_args_is_help=True)

CONFIG = typer.Option(None, "--config", help="YAML settings file (for data_dir).")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``12h``, ``1d``, ``2w`` -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if not match or float(match.group(1)) <= 0:
        raise InvalidRequest(f"'{text}' is not a duration like 30m, 12h, 1d or 2w")
    return float(match.group(1)) * _UNITS[match.group(2)]


def format_duration(seconds: float) -> str:
    for unit in "wdhm":
        if seconds >= _UNITS[unit] and seconds % _UNITS[unit] == 0:
            return f"{seconds / _UNITS[unit]:g}{unit}"
    return f"{seconds:g}s"


def open_store(config: Path | None) -> Store:
    try:
        settings = Settings.load(config)
        return open_backend(settings)
    except OcakError as exc:
        fail_on(exc, 2)


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def _num(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


@app.command("create")
def create(
    name: str = typer.Option(..., "--name", help="Who or what the key is for (shown in usage)."),
    models: list[str] = typer.Option(
        None, "--models", help="Models the key may use (repeat, or comma-separated); default all."
    ),
    locality: str = typer.Option(
        None, "--locality", help="'local': requests must be served on this machine."
    ),
    rpm: int = typer.Option(None, "--rpm", help="Requests per minute."),
    tpm: int = typer.Option(None, "--tpm", help="Tokens (prompt + completion) per minute."),
    budget_tokens: int = typer.Option(None, "--budget-tokens", help="Token budget."),
    budget_period: str = typer.Option(
        None, "--budget-period", help="Renew the budget every period (1d, 30d, ...); default never."
    ),
    admin: bool = typer.Option(
        False, "--admin", help="May also change the machine: models, keys, data deletion."
    ),
    config: Path = CONFIG,
) -> None:
    """Create a key and print it (the only time it is shown: ocak keeps a hash)."""
    wanted = [m for entry in models or [] for m in entry.split(",")]
    db = open_store(config)
    try:
        period = parse_duration(budget_period) if budget_period else None
        key, info = create_key(
            db,
            name,
            models=wanted or None,
            locality=locality,
            rpm=rpm,
            tpm=tpm,
            budget_tokens=budget_tokens,
            budget_period=period,
            admin=admin,
        )
    except OcakError as exc:
        fail_on(exc)
    finally:
        db.close()
    print(key)
    err_console.print(
        f"Created key '{info.name}' ({info.prefix}...). Store it now: it is not shown again.",
        highlight=False,
    )


@app.command("list")
def list_(
    all_: bool = typer.Option(False, "--all", help="Include revoked keys."),
    config: Path = CONFIG,
) -> None:
    """The keys (never the keys themselves: name, prefix, limits, tokens used)."""
    db = open_store(config)
    try:
        keys = list_keys(db, include_revoked=all_)
        table = Table()
        for header in ("name", "prefix", "scope", "models", "locality"):
            table.add_column(header, overflow="fold")
        for header in ("rpm", "tpm", "budget", "tokens used"):
            table.add_column(header, justify="right")
        table.add_column("created", no_wrap=True)
        if all_:
            table.add_column("revoked", no_wrap=True)
        for k in keys:
            budget = _num(k.budget_tokens)
            if k.budget_tokens is not None and k.budget_period:
                budget += f" / {format_duration(k.budget_period)}"
            row = [
                k.name,
                k.prefix + "...",
                "admin" if k.admin else "api",
                ", ".join(k.models) if k.models else "all",
                k.locality or "any",
                _num(k.rpm),
                _num(k.tpm),
                budget,
                f"{tokens_used(db, k.id):,}",
                _when(k.created_at),
            ]
            if all_:
                row.append(_when(k.revoked_at))
            table.add_row(*row)
    finally:
        db.close()
    if not keys:
        err_console.print("No API keys: the server answers on loopback without keys.")
        return
    wide_console().print(table)


@app.command("revoke")
def revoke(
    name: str = typer.Argument(..., help="The key's name (or its prefix)."),
    config: Path = CONFIG,
) -> None:
    """Revoke a key; a running server refuses it from its next request on."""
    db = open_store(config)
    try:
        info = revoke_key(db, name)
    except OcakError as exc:
        fail_on(exc)
    finally:
        db.close()
    err_console.print(f"Revoked key '{info.name}' ({info.prefix}...).", highlight=False)
