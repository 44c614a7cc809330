"""``ocak models``: what can be served; pull, show and remove stored models."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ocak.cli.common import fail_on, wide_console
from ocak.cli.convert import convert
from ocak.config import Settings
from ocak.errors import OcakError
from ocak.models.describe import describe
from ocak.models.hub import Progress
from ocak.models.source import stored_quantization
from ocak.models.store import (
    DEFAULT_MODEL_ID,
    ModelFileError,
    ModelStore,
    default_model_path,
    disk_size,
    resolve,
)

app = typer.Typer(help="Manage models.", no_args_is_help=True)
app.command("convert")(convert)


def _size(path_size: int) -> str:
    return f"{path_size / 2**20:.0f} MiB"


def listed(settings: Settings) -> list[tuple[str, ...]]:
    """``ocak models list``'s rows (id, kind, engine, quantization, size, source, path): the
    embedded default, the bundled voice models (packages of the voice extra), the store."""
    from ocak.engines.speech.stt import BUNDLED_STT, bundled_stt
    from ocak.engines.speech.tts import bundled_voices

    rows: list[tuple[str, ...]] = []
    with contextlib.suppress(ModelFileError):
        default = default_model_path()
        quant = stored_quantization(default, "llama.cpp") or "?"
        rows.append(_row(DEFAULT_MODEL_ID, "chat", "llama.cpp", quant, default, "bundled"))
    for voice in bundled_voices():
        rows.append(_row(voice.id, "text-to-speech", "piper", "-", voice.path, "bundled"))
    stt = bundled_stt()
    if stt is not None:
        rows.append(_row(BUNDLED_STT, "speech-to-text", "faster-whisper", "-", stt, "bundled"))
    for stored in ModelStore(settings.model_dir).models():
        spec = stored.spec()
        speech = spec.kind in ("text-to-speech", "speech-to-text")
        quant = "-" if speech else stored_quantization(spec.path, spec.engine) or "?"
        rows.append(_row(spec.id, spec.kind, spec.engine, quant, spec.path, "store"))
    return rows


def _row(name: str, kind: str, engine: str, quant: str, path: Path, source: str) -> tuple[str, ...]:
    return (name, kind, engine, quant, _size(disk_size(path)), source, str(path))


@app.command("list")
def list_models() -> None:
    """Models available without a download: the embedded default, the bundled voice and
    Whisper (with the voice extra), and the store (models, adapters, Piper voices)."""
    settings = Settings.load()
    table = Table("id", "kind", "engine", "quantization", "size", "source", "path")
    for row in listed(settings):
        table.add_row(*row)
    wide_console(240).print(table)  # paths are long
    partials = ModelStore(settings.model_dir).partials()
    if partials:
        names = ", ".join(p.name for p in partials)
        Console(stderr=True).print(
            f"unfinished pulls (run the same pull again to resume): {names}", highlight=False
        )
    Console(stderr=True).print(f"model store: {settings.model_dir}", highlight=False)


class _PullBar:
    """Progress of a pull: a bar per file on a terminal, a line per step otherwise."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.bar: Any = None
        self.tasks: dict[str, Any] = {}
        self.last: dict[str, float] = {}
        if console.is_terminal:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TransferSpeedColumn,
            )

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                console=console,
            )
            self.bar.start()

    def __call__(self, p: Progress) -> None:
        if p.stage == "downloading" and p.file is not None:
            if self.bar is not None:
                task = self.tasks.get(p.file)
                if task is None:
                    task = self.tasks[p.file] = self.bar.add_task(p.file, total=p.total)
                self.bar.update(task, completed=p.completed, total=p.total)
                return
            now = time.monotonic()
            done = p.total is not None and p.completed >= p.total
            if now - self.last.get(p.file, 0.0) >= 2.0 or done:
                self.last[p.file] = now
                total = f"/{_size(p.total)}" if p.total else ""
                self._line(f"downloading {p.file}: {_size(p.completed)}{total}")
            return
        self._line(f"{p.stage}: {p.file or p.detail}")

    def _line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.console.print(text, highlight=False)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


@app.command("pull")
def pull(
    ref: Annotated[str, typer.Argument(help="OWNER/REPO, optionally :QUANT or :FILE.gguf.")],
    revision: Annotated[str, typer.Option(help="A branch, tag or commit of the repo.")] = "main",
    base: Annotated[
        str | None, typer.Option(help="For a LoRA adapter: the model it applies to.")
    ] = None,
) -> None:
    """Download a model from the Hugging Face Hub into the store (resumes an interrupted
    pull; HF_TOKEN for gated models, HF_ENDPOINT for a mirror)."""
    from ocak.models.hub import Hub, parse_ref
    from ocak.models.hub import pull as pull_model

    settings = Settings.load()
    progress = _PullBar(Console(stderr=True))
    try:
        manifest = pull_model(
            parse_ref(ref, revision),
            ModelStore(settings.model_dir),
            Hub(),
            report=progress,
            base=base,
        )
    except OcakError as exc:
        progress.close()
        fail_on(exc)
    progress.close()
    print(manifest.name)


@app.command("add")
def add(
    file: Annotated[
        Path,
        typer.Argument(
            help="A GGUF file (a model or a LoRA adapter) or a Piper voice (VOICE.onnx, "
            "its VOICE.onnx.json beside it)."
        ),
    ],
    name: Annotated[
        str | None, typer.Option(help="The name clients use (default: the file's name).")
    ] = None,
    base: Annotated[
        str | None,
        typer.Option(
            help="For an adapter: the model it applies to (its name then serves as BASE@NAME)."
        ),
    ] = None,
) -> None:
    """Copy a GGUF file from this machine into the store (a model, or a LoRA adapter chosen
    per request: model BASE@NAME or the request field adapters), or a Piper voice (then
    /v1/audio/speech speaks it as voice NAME, once the server restarts)."""
    from ocak.models.add import add_file

    settings = Settings.load()
    try:
        manifest = add_file(ModelStore(settings.model_dir), file, name=name, base=base)
    except OcakError as exc:
        fail_on(exc)
    print(f"{manifest.name} ({manifest.kind})")


@app.command("show")
def show(name: Annotated[str, typer.Argument(help="A model id (see `ocak models list`).")]) -> None:
    """What a model is: architecture, parameters, quantization, context length, chat
    template, licence, size and source."""
    settings = Settings.load()
    try:
        spec = resolve(name, settings.model_dir)
        stored = ModelStore(settings.model_dir).find(spec.id)
        facts = describe(spec, stored.manifest if stored else None)
    except OcakError as exc:
        fail_on(exc)
    table = Table(show_header=False, box=None)
    for key, value in facts.items():
        if key != "chat template":
            table.add_row(key, str(value))
    Console().print(table)
    template = facts.get("chat template")
    if template:
        Console().print("\nchat template:", highlight=False)
        print(template)


@app.command("rm")
def rm(name: Annotated[str, typer.Argument(help="A model id in the store.")]) -> None:
    """Delete a model (or an unfinished pull of it) from the store."""
    settings = Settings.load()
    try:
        removed = ModelStore(settings.model_dir).remove(name)
    except OcakError as exc:
        fail_on(exc)
    print(f"removed {removed.name}")
