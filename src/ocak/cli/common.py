"""Helpers shared by CLI commands: logging, error exits, options."""

from __future__ import annotations

import logging
import sys
from typing import NoReturn

import typer
from rich.console import Console

from ocak.errors import OcakError

err_console = Console(stderr=True)


def wide_console(width: int = 160) -> Console:
    """A console for tables: the terminal's width, or ``width`` when piped (whole lines for
    grep and logs, not rich's 80 columns)."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=width)
    return console


def setup_logging(level: str = "info") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # llama.cpp's load chatter is useful only when debugging.
    if level.lower() != "debug":
        logging.getLogger("ocak.llamacpp.native").setLevel(logging.ERROR)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one clear line and exit non-zero."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def fail_on(exc: OcakError, code: int = 1) -> NoReturn:
    fail(exc.message, code)
