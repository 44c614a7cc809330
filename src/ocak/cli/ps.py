"""``ocak ps``: the models a running server has loaded, their memory and when they unload."""

from __future__ import annotations

import time
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from ocak.cli.common import fail, wide_console


def _until(expires_at: Any, in_flight: int) -> str:
    if in_flight:
        return f"in use ({in_flight})"
    if expires_at is None:
        return "never"
    left = max(0.0, float(expires_at) - time.time())
    return f"in {left / 60:.0f} min" if left >= 90 else f"in {left:.0f} s"


def ps(
    url: Annotated[
        str, typer.Option(envvar="OCAK_URL", help="The server.")
    ] = "http://127.0.0.1:8000",
    api_key: Annotated[
        str | None, typer.Option(envvar="OCAK_API_KEY", help="A key, when the server has keys.")
    ] = None,
) -> None:
    """List the models the server has loaded now."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(f"{url.rstrip('/')}/v1/models", headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        fail(f"cannot reach ocak at {url}: {exc} (is `ocak serve` running?)")
    if response.status_code != 200:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:200]
        fail(f"{url} answered {response.status_code}: {message}")
    table = Table("id", "engine", "memory", "context", "unloads")
    for model in response.json().get("data", []):
        meta = model.get("meta") or {}
        if not meta.get("loaded"):
            continue
        memory = f"{(meta.get('resident_bytes') or 0) / 2**20:.0f} MiB"
        until = _until(meta.get("expires_at"), int(meta.get("in_flight") or 0))
        table.add_row(
            model["id"], str(meta.get("engine")), memory, str(meta.get("context_length")), until
        )
    wide_console(240).print(table)
