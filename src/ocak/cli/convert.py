"""``ocak models convert``: a Hugging Face folder or a GGUF file to a CTranslate2 model."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ocak.cli.common import fail, fail_on
from ocak.config import Settings
from ocak.config import parse_size as config_size
from ocak.errors import OcakError


def parse_size(text: str) -> int:
    """``512MiB``, ``4G``, ``1.5GiB`` or plain bytes (the settings' own parser)."""
    try:
        size = config_size(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    assert size is not None
    return size


class PlainProgress:
    """One log line per stage, for logs and pipes."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def stage(self, name: str, detail: str = "") -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed:6.1f}s] {name}: {detail}", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


class RichProgress:
    """A live list of the stages on a terminal: done, running (with a spinner), to come."""

    def __init__(self, console: Console) -> None:
        from rich.live import Live

        from ocak.models.convert import STAGES

        self.console = console
        self.stages = list(STAGES)
        self.current: str | None = None
        self.details: dict[str, str] = {}
        self.times: dict[str, float] = {}
        self.started = time.monotonic()
        self.live = Live(self._render(), console=console, refresh_per_second=8, transient=False)
        self.live.start()

    def _render(self) -> Table:
        from rich.spinner import Spinner

        table = Table.grid(padding=(0, 1))
        done = True
        for name in self.stages:
            detail = self.details.get(name, "")
            if name == self.current:
                table.add_row(Spinner("dots"), f"[bold]{name}[/]", detail)
                done = False
            elif done and name in self.details:
                table.add_row("[green]✓[/]", name, f"[dim]{detail}[/]")
            else:
                table.add_row("[dim]·[/]", f"[dim]{name}[/]", "")
        return table

    def stage(self, name: str, detail: str = "") -> None:
        self.current = name
        self.details[name] = detail
        self.times[name] = time.monotonic()
        self.live.update(self._render())

    def close(self) -> None:
        self.current = None
        self.live.update(self._render())
        self.live.stop()


def convert(
    source: Path = typer.Argument(..., help="A Hugging Face checkpoint folder or a GGUF file."),
    name: str = typer.Option(None, "--name", help="Name in the model store (default: derived)."),
    quantization: str = typer.Option(
        "auto",
        "--quantization",
        "-q",
        help="auto (int8 on CPU, float16 with a CUDA GPU), int8, int8_float16, int8_float32, "
        "float16, bfloat16 or float32.",
    ),
    force: bool = typer.Option(
        False, "--force", help="Convert even if memory looks short; replace a model of that name."
    ),
    max_memory: str = typer.Option(
        None, "--max-memory", help="Refuse if the estimate exceeds this much (e.g. 4GiB)."
    ),
) -> None:
    """Convert a checkpoint to CTranslate2 into ocak's model store."""
    from ocak.models.convert import convert as run_convert
    from ocak.models.convert import gib

    logging.basicConfig(level=logging.WARNING)
    try:
        settings = Settings.load()
    except OcakError as exc:
        fail_on(exc, 2)
    limit = parse_size(max_memory) if max_memory else None
    out = Console(stderr=True)
    progress: PlainProgress | RichProgress = (
        RichProgress(out) if out.is_terminal else PlainProgress()
    )
    try:
        result = run_convert(
            source,
            settings.model_dir,
            name=name,
            quantization=quantization,
            force=force,
            memory_limit=limit,
            progress=progress,
        )
    except OcakError as exc:
        progress.close()
        fail_on(exc)
    except KeyboardInterrupt:
        progress.close()
        fail("interrupted: nothing was written to the model store", 130)
    progress.close()
    if result.skipped:
        print(f"{result.name} is already converted ({result.quantization}): {result.path}")
        return
    print(
        f"converted {source} to {result.name} ({result.reason}) in {result.seconds:.0f}s, "
        f"peak memory estimate {gib(result.estimate)}: {result.path}"
    )
    print(f"serve it with: ocak serve --model {result.name}")
