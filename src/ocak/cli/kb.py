"""``ocak kb``: knowledge bases on this machine (``knowledge.db`` in the data folder).

The commands work on the store directly, with the bundled embedder loaded in this
process, so they need no running server; a running server sees the changes at its next
search. Over HTTP the same operations are ``/v1/knowledge`` (docs/knowledge.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from ocak.cli.common import fail_on, wide_console
from ocak.config import Settings
from ocak.engines.embedding import BUNDLED_EMBEDDER, bundled_embedder_path
from ocak.engines.embedding.bert import BertEmbedder
from ocak.errors import InvalidRequest, OcakError
from ocak.knowledge.store import AddProgress, KnowledgeStore

app = typer.Typer(
    help="Manage knowledge bases (documents searched by meaning).", no_args_is_help=True
)
CONFIG = typer.Option(None, "--config", help="ocak.yaml (for the data folder).")
# What a folder's files are imported as; a file named on the command line is read whatever
# its name (as text when it is not one of these).
KNOWN = {".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".rst", ".csv", ".json"}


def _store(config: Path | None) -> KnowledgeStore:
    try:
        settings = Settings.load(config)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        return KnowledgeStore(settings.data_dir / "knowledge.db")
    except OcakError as exc:
        fail_on(exc, 2)


def _embedder(model: str) -> BertEmbedder:
    path = bundled_embedder_path()
    if path is None or model != BUNDLED_EMBEDDER:
        fail_on(InvalidRequest(f"The embedding model '{model}' is not installed here."), 2)
    return BertEmbedder(path, model)


def files_in(paths: list[Path]) -> Iterator[tuple[str, Path]]:
    """(source name, file) for each path: a file as its name, a folder's known files
    recursively, named by their path inside it."""
    for path in paths:
        if path.is_dir():
            for found in sorted(p for p in path.rglob("*") if p.is_file()):
                if found.suffix.lower() in KNOWN:
                    yield found.relative_to(path).as_posix(), found
        else:
            yield path.name, path


@app.command("create")
def create(
    name: str,
    model: str = typer.Option(BUNDLED_EMBEDDER, "--model", help="The embedding model."),
    config: Path = CONFIG,
) -> None:
    """Create an empty knowledge base."""
    store = _store(config)
    try:
        info = store.create(name, model, _embedder(model).dimensions)
    except OcakError as exc:
        fail_on(exc)
    finally:
        store.close()
    print(f"{info.name} ({info.model}, {info.dimensions} dimensions)")


@app.command("add")
def add(
    name: str,
    paths: list[Path] = typer.Argument(..., help="Files or folders (recursively)."),
    config: Path = CONFIG,
) -> None:
    """Import documents (text, Markdown, HTML, PDF). A changed file re-embeds only what
    changed; an unreadable or empty one is reported and skipped. Ctrl-C keeps the files
    already imported and leaves the one in progress as it was."""
    store = _store(config)
    console = wide_console()
    done = skipped = 0
    try:
        embedder = _embedder(store.info(name).model)

        def embed(texts: list[str]) -> Any:
            return embedder.embed(embedder.ids_for(texts, truncate=True))

        for source, path in files_in(paths):

            def progress(p: AddProgress, source: str = source) -> None:
                if console.is_terminal:  # a line that the file's result overwrites
                    console.print(f"  {source}: {p.chunks} chunks", end="\r", highlight=False)

            try:
                result = store.add(name, source, path.read_bytes(), embed, progress)
            except (OSError, InvalidRequest) as exc:
                skipped += 1
                why = exc.message if isinstance(exc, OcakError) else str(exc)
                console.print(f"skipped {source}: {why}", highlight=False)
                continue
            done += 1
            console.print(
                f"{result.status} {source}: {result.chunks} chunks, {result.embedded} embedded",
                highlight=False,
            )
    except KeyboardInterrupt:
        console.print(f"interrupted: {done} files imported; the one in progress was not")
        raise typer.Exit(130) from None
    except OcakError as exc:
        fail_on(exc)
    finally:
        store.close()
    if skipped:
        console.print(f"{done} imported, {skipped} skipped", highlight=False)


@app.command("list")
def list_bases(config: Path = CONFIG) -> None:
    """The knowledge bases."""
    store = _store(config)
    try:
        bases = store.list()
    finally:
        store.close()
    table = Table("name", "model", "documents", "chunks", "MiB")
    for b in bases:
        table.add_row(b.name, b.model, str(b.documents), str(b.chunks), f"{b.bytes / 2**20:.1f}")
    wide_console().print(table)


@app.command("show")
def show(name: str, config: Path = CONFIG) -> None:
    """One knowledge base's documents."""
    store = _store(config)
    try:
        info, docs = store.info(name), store.documents(name)
    except OcakError as exc:
        fail_on(exc)
    finally:
        store.close()
    print(f"{info.name}: {info.documents} documents, {info.chunks} chunks ({info.model})")
    table = Table("document", "chunks", "bytes", "sha256")
    for d in docs:
        table.add_row(d.source, str(d.chunks), f"{d.size:,}", d.sha256[:12])
    wide_console().print(table)


@app.command("rm")
def rm(
    name: str,
    document: str = typer.Option(None, "--document", help="Remove only this document."),
    config: Path = CONFIG,
) -> None:
    """Delete a knowledge base, or one of its documents."""
    store = _store(config)
    try:
        if document is None:
            store.remove(name)
        elif not store.remove_document(name, document):
            fail_on(InvalidRequest(f"'{name}' has no document '{document}'."))
    except OcakError as exc:
        fail_on(exc)
    finally:
        store.close()


@app.command("search")
def search(
    name: str,
    query: str,
    k: int = typer.Option(5, "-k", help="How many chunks."),
    mode: str = typer.Option("hybrid", "--mode", help="hybrid, vector or keyword."),
    config: Path = CONFIG,
) -> None:
    """The chunks that best match QUERY, with their sources."""
    store = _store(config)
    try:
        info = store.info(name)
        vector = None
        if mode != "keyword":
            embedder = _embedder(info.model)
            vector = embedder.embed(embedder.ids_for([query], truncate=True))[0]
        hits = store.search(name, query, vector, k, mode)  # type: ignore[arg-type]
    except OcakError as exc:
        fail_on(exc)
    finally:
        store.close()
    console = wide_console()
    for n, h in enumerate(hits, 1):
        where = h.source + (f" p.{h.page}" if h.page is not None else "") + f" [{h.start}:{h.end}]"
        console.print(f"{n}. {where} {h.heading} ({h.score:.4f})", highlight=False)
        console.print("   " + " ".join(h.text.split())[:300], highlight=False)
