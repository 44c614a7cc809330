"""``ocak models add FILE``: a GGUF file on this machine (a model or a LoRA adapter), or a
Piper voice (``.onnx`` with its ``.onnx.json``: ``models/voices.py``), into the store,
with its manifest.

The file is copied into a staging folder and renamed into place like a pull, so the
store never holds half a file; whether it is a model or an adapter is read from its
header (``general.type``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ocak.models.gguf_header import gguf_kind, read_metadata
from ocak.models.manifest import Manifest, check_name, describe_files
from ocak.models.store import ModelFileError, ModelStore
from ocak.models.voices import add_voice


def add_file(
    store: ModelStore, path: Path, *, name: str | None = None, base: str | None = None
) -> Manifest:
    """Store ``path`` by what it is: a Piper voice (``.onnx``) or a GGUF."""
    if path.suffix.lower() == ".onnx":
        if base is not None:
            raise ModelFileError(f"{path.name} is a Piper voice: it takes no base model")
        return add_voice(store, path, name=name)
    return add_gguf(store, path, name=name, base=base)


def add_gguf(
    store: ModelStore, path: Path, *, name: str | None = None, base: str | None = None
) -> Manifest:
    """Store ``path`` as ``name`` (default: the file's stem); ``base``: for an adapter, the
    model it applies to (then its name alone serves as BASE@NAME)."""
    if not path.is_file():
        raise ModelFileError(f"no such file: {path}")
    name = check_name(name or path.stem)
    meta = read_metadata(path)  # "not a GGUF file" for anything else
    kind = gguf_kind(meta, path.name)
    if base is not None and kind != "adapter":
        raise ModelFileError(f"{path.name} is a model, not an adapter: it takes no base model")
    license_ = meta.get("general.license")
    with store.staging(name) as folder:
        for old in folder.iterdir():  # a staging folder left by a killed add
            old.unlink() if old.is_file() else shutil.rmtree(old)
        shutil.copyfile(path, folder / path.name)
        manifest = Manifest(
            name=name,
            kind=kind,
            engine="llama.cpp",
            entry=path.name,
            files=describe_files(folder),
            license=license_ if isinstance(license_, str) else None,
            base=base,
        )
        store.commit(folder, manifest)
    return manifest
