"""``ocak prompts``: the prompt registry on this machine (``prompts.db`` in the data folder).

The commands work on the store directly, so they need no running server; a running
server reads the store at every request, so a label moved here applies to its next one.
Over HTTP the same operations are ``/v1/prompts`` (docs/prompts.md). ``export`` and
``import`` keep prompts in git as YAML (or JSON).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.table import Table

from ocak.cli.common import fail, fail_on, wide_console
from ocak.config import Settings
from ocak.errors import InvalidRequest, OcakError
from ocak.prompts.store import PromptStore, to_yaml

app = typer.Typer(help="Manage versioned prompts (rendered server-side by name).",
                  no_args_is_help=True)  # fmt: skip
CONFIG = typer.Option(None, "--config", help="ocak.yaml (for the data folder).")


@contextmanager
def opened(config: Path | None) -> Iterator[PromptStore]:
    """The store, closed afterwards; an ``OcakError`` inside is one clear line and exit 1
    (2 when the store cannot be opened)."""
    try:
        settings = Settings.load(config)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = PromptStore(settings.data_dir / "prompts.db", settings.database_url)
    except OcakError as exc:
        fail_on(exc, 2)
    try:
        yield store
    except OcakError as exc:
        fail_on(exc)
    finally:
        store.close()


def read_document(path: Path) -> Any:
    """A YAML or JSON file (YAML is a superset); 2 for one that cannot be read."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}", 2)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        fail(f"{path} is not YAML or JSON: {exc}", 2)


def parse_vars(pairs: list[str]) -> dict[str, Any]:
    """``name=value`` pairs; a value that parses as JSON (5, true, "x") is that value."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            fail(f"--var takes name=value, not '{pair}'", 2)
        try:
            out[name] = json.loads(value)
        except ValueError:
            out[name] = value
    return out


@app.command("create")
def create(
    prompt_id: str = typer.Argument(..., metavar="ID"),
    file: Path = typer.Option(
        None, "--file", "-f", help="YAML/JSON with messages, variables, model, params."
    ),
    system: str = typer.Option(None, "--system", help="A system message (a Jinja2 template)."),
    user: str = typer.Option(None, "--user", help="A user message (a Jinja2 template)."),
    variables: list[str] = typer.Option([], "--variable", help="Declare a variable (name)."),
    model: str = typer.Option(None, "--model", help="The model this version is meant for."),
    note: str = typer.Option(None, "--note", help="What changed, and why."),
    label: list[str] = typer.Option([], "--label", help="Point a label at the new version."),
    config: Path = CONFIG,
) -> None:
    """Add a version: from a file, or from --system/--user messages. Re-creating the
    latest content changes nothing."""
    spec: dict[str, Any] = {}
    if file is not None:
        loaded = read_document(file)
        if not isinstance(loaded, dict):
            fail(f"{file} holds no prompt (an object with messages)", 2)
        spec = loaded
    messages = list(spec.get("messages") or [])
    messages += [{"role": r, "content": c} for r, c in (("system", system), ("user", user)) if c]
    declared = spec.get("variables") if spec.get("variables") is not None else variables
    with opened(config) as store:
        version = store.create(
            prompt_id, messages, declared or None, model or spec.get("model"),
            spec.get("params"), note or spec.get("note"), spec.get("description"),
        )  # fmt: skip
        for name in label:
            store.label(prompt_id, name, version.version)
    print(f"{prompt_id}@{version.version} {version.sha256[:12]}")


@app.command("list")
def list_prompts(config: Path = CONFIG) -> None:
    """Every prompt, its latest version and its labels."""
    with opened(config) as store:
        found = store.list()
    table = Table("id", "latest", "labels", "description")
    for p in found:
        labels = ", ".join(f"{k}→{v}" for k, v in p.labels.items())
        table.add_row(p.id, str(p.latest), labels, p.description or "")
    wide_console().print(table)


@app.command("show")
def show(
    prompt_id: str = typer.Argument(..., metavar="ID"),
    version: int = typer.Option(None, "--version", "-v", help="A version number."),
    label: str = typer.Option(None, "--label", "-l", help="A label (or 'latest')."),
    config: Path = CONFIG,
) -> None:
    """One version as YAML (the latest by default) with the labels pointing at it."""
    with opened(config) as store:
        v = store.get(prompt_id, version=version, label=label)
        labels = [k for k, n in store.labels(prompt_id).items() if n == v.version]
    print(to_yaml({"id": v.prompt, "labels": labels, **v.to_dict()}), end="")


@app.command("label")
def label_version(
    prompt_id: str = typer.Argument(..., metavar="ID"),
    label: str = typer.Argument(..., help="production, staging, ..."),
    version: int = typer.Argument(..., help="The version it points at from now on."),
    config: Path = CONFIG,
) -> None:
    """Point a label at a version (creating or moving it)."""
    with opened(config) as store:
        before = store.labels(prompt_id).get(label)
        store.label(prompt_id, label, version)
    moved = "" if before is None or before == version else f" (was {before})"
    print(f"{prompt_id} {label} → {version}{moved}")


@app.command("diff")
def diff(
    prompt_id: str = typer.Argument(..., metavar="ID"),
    a: int = typer.Argument(..., help="The older version."),
    b: int = typer.Argument(..., help="The newer version."),
    config: Path = CONFIG,
) -> None:
    """A unified diff of two versions."""
    with opened(config) as store:
        text = store.diff(prompt_id, a, b)
    print(text or f"{prompt_id}@{a} and @{b} have the same content", end="" if text else "\n")


@app.command("render")
def render(
    prompt_id: str = typer.Argument(..., metavar="ID"),
    var: list[str] = typer.Option([], "--var", help="name=value (JSON values allowed)."),
    version: int = typer.Option(None, "--version", "-v"),
    label: str = typer.Option(None, "--label", "-l"),
    config: Path = CONFIG,
) -> None:
    """The messages a chat request naming this prompt would get, as JSON."""
    values = parse_vars(var)
    with opened(config) as store:
        done = store.render(prompt_id, values, version=version, label=label)
    out = {"id": done.prompt, "version": done.version, "model": done.model,
           "params": dict(done.params), "messages": done.chat_messages()}  # fmt: skip
    print(json.dumps(out, indent=2, ensure_ascii=False))


@app.command("export")
def export(
    ids: list[str] = typer.Argument(None, metavar="[ID]...", help="Prompts (default: all)."),
    output: Path = typer.Option(None, "--output", "-o", help="A file (default: stdout)."),
    fmt: str = typer.Option("yaml", "--format", help="yaml or json."),
    config: Path = CONFIG,
) -> None:
    """Every version and label of the prompts, for keeping them in git."""
    if fmt not in ("yaml", "json"):
        fail_on(InvalidRequest("--format is yaml or json"), 2)
    with opened(config) as store:
        data = store.export(ids or None)
    text = to_yaml(data) if fmt == "yaml" else json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if output is None:
        print(text, end="")
    else:
        output.write_text(text, encoding="utf-8")


@app.command("import")
def import_(
    file: Path = typer.Argument(..., help="An export (YAML or JSON)."),
    config: Path = CONFIG,
) -> None:
    """Add what an export holds that this registry lacks, all or nothing: a version that
    differs from the one here is a conflict, and nothing is written."""
    data = read_document(file)
    with opened(config) as store:
        done = store.import_(data)
    print(
        f"{done.prompts_created} prompts created, {done.versions_added} versions added, "
        f"{done.versions_unchanged} unchanged, {done.labels_set} labels set"
    )
