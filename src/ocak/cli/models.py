"""``ocak models``: what can be served."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from ocak.cli.convert import convert
from ocak.config import Settings
from ocak.models.source import stored_quantization
from ocak.models.store import available, disk_size

app = typer.Typer(help="Manage models.", no_args_is_help=True)
app.command("convert")(convert)


def _size(path_size: int) -> str:
    return f"{path_size / 2**20:.0f} MiB"


@app.command("list")
def list_models() -> None:
    """Models available without a download: the embedded default and the store."""
    settings = Settings.load()
    table = Table("id", "engine", "quantization", "size", "path")
    for spec in available(settings.model_dir):
        quant = stored_quantization(spec.path, spec.engine) or "?"
        table.add_row(spec.id, spec.engine, quant, _size(disk_size(spec.path)), str(spec.path))
    Console().print(table)
    Console(stderr=True).print(f"model store: {settings.model_dir}", highlight=False)
