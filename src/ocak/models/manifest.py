"""A stored model's manifest (``ocak-model.json``) and the names it is known by.

Clients name a model as they would on the Hub (``HuggingFaceTB/SmolLM2-135M-Instruct-GGUF``,
with a quantization: ``...:Q4_K_M``); the folder it is stored in gets a name every
file system takes (no ``/`` or ``:``, nothing Windows reserves). The manifest says
what the model is (chat, embedding, speech-to-text, text-to-speech, adapter),
which engine reads it, where it came from (repo and commit), its files with their
sha256, licence, size and the parameters its authors recommend. Voices,
embedders and adapters are stored through the same manifest.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, computed_field

from ocak.errors import InvalidRequest, OcakError

MANIFEST = "ocak-model.json"
Kind = Literal["chat", "embedding", "speech-to-text", "text-to-speech", "adapter"]
KINDS: tuple[Kind, ...] = ("chat", "embedding", "speech-to-text", "text-to-speech", "adapter")

_PART = r"[A-Za-z0-9][A-Za-z0-9._+-]*"
# name, owner/name, either with :tag (a quantization or a file name)
NAME = re.compile(rf"^{_PART}(/{_PART})?(:[A-Za-z0-9][A-Za-z0-9._+-]*)?$")
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10))} | {
    f"lpt{i}" for i in range(10)
}


class ManifestError(OcakError):
    """A manifest that cannot be read (corrupt file, unknown schema)."""


class StoredFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="Relative to the model's folder, '/'-separated.")
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hub: str = Field("huggingface", description="Where it was pulled from.")
    repo: str
    revision: str = Field(description="The commit the files were taken from.")
    files: list[str] = Field(default_factory=list, description="The repo files taken.")


class Manifest(BaseModel):
    """What ``ocak-model.json`` holds."""

    model_config = ConfigDict(extra="ignore")  # newer fields from a newer ocak are kept out

    schema_version: int = 1
    name: str = Field(description="The name clients use.")
    kind: Kind = "chat"
    engine: str = Field(description="Which engine reads it: llama.cpp, ctranslate2, ...")
    entry: str = Field(".", description="The file the engine opens ('.' for the folder).")
    files: list[StoredFile] = Field(default_factory=list)
    source: Source | None = None
    license: str | None = None
    params: dict[str, Any] = Field(
        default_factory=dict, description="Sampling parameters the model's authors recommend."
    )
    base: str | None = Field(None, description="For an adapter: the model it applies to.")
    display_name: str | None = Field(
        None,
        description="Another name clients may use that is no file name (a fine-tuned "
        "model's ft:BASE:ORG:SUFFIX:ID).",
    )
    created: float = Field(default_factory=time.time)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def size(self) -> int:
        """Bytes on disk, all files (written to the manifest for other readers)."""
        return sum(f.size for f in self.files)

    def write(self, folder: Path) -> None:
        """Write atomically: a reader never sees half a manifest."""
        tmp = folder / f".{MANIFEST}.tmp"
        tmp.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        tmp.replace(folder / MANIFEST)

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        path = folder / MANIFEST
        try:
            return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, ValidationError) as exc:
            raise ManifestError(f"{path} cannot be read: {exc}") from None


def check_name(name: str) -> str:
    """``name`` if clients may use it for a stored model; else a clear 400."""
    if len(name) > 200 or not NAME.fullmatch(name):
        raise InvalidRequest(
            f"'{name[:200]}' is not a model name: use letters, digits and . _ + -, "
            "optionally OWNER/NAME and a :TAG "
            "(e.g. HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:Q4_K_M)",
            param="model",
        )
    return name


def folder_name(name: str) -> str:
    """A folder name for ``name`` that every file system takes (``/`` and ``:`` become
    ``--``; a short hash keeps names apart that would otherwise meet)."""
    plain = name.replace("/", "--").replace(":", "--")
    plain = re.sub(r"[^A-Za-z0-9._+-]", "-", plain).rstrip(". ")
    if plain != name or plain.split(".")[0].lower() in _WINDOWS_RESERVED:
        plain = f"{plain}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return plain


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def describe_files(folder: Path) -> list[StoredFile]:
    """Every file under ``folder`` (but the manifest), with its size and sha256."""
    out = []
    for f in sorted(folder.rglob("*")):
        if f.is_file() and f.name != MANIFEST and not f.name.startswith("."):
            rel = f.relative_to(folder).as_posix()
            out.append(StoredFile(path=rel, size=f.stat().st_size, sha256=file_sha256(f)))
    return out
