"""Build the engines a server runs from its settings."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path

from ocak.config import Settings
from ocak.engines.base import Engine
from ocak.engines.registry import AdapterFile, EngineRegistry, Pool
from ocak.errors import ModelNotFound, OcakError
from ocak.models.hardware import DeviceError, detect_cuda, pick_device
from ocak.models.memory import estimate
from ocak.models.store import ModelSpec, ModelStore, resolve
from ocak.plugins import Registry, UnknownKind

log = logging.getLogger("ocak.engines")


class ModelSpecError(OcakError):
    """A ``--model`` value that names nothing ocak can load."""


EngineBuilder = Callable[[str, Path, Settings], Engine]
# Engine kinds by name: entry points of the group "ocak.engines" (pyproject.toml).
ENGINES: Registry[EngineBuilder] = Registry("ocak.engines")


def engine_for(spec: ModelSpec, settings: Settings) -> Engine:
    """The engine that serves ``spec``, configured from ``settings``."""
    if spec.kind == "adapter":
        raise ModelSpecError(
            f"'{spec.id}' is a LoRA adapter, not a model: serve its base model and ask for "
            f"BASE@{spec.id}"
        )
    try:
        builder = ENGINES.get(spec.engine)
    except UnknownKind:
        raise ModelSpecError(f"no engine can serve {spec.path} (kind {spec.engine})") from None
    return builder(spec.id, spec.path, settings)


class StoreCatalog:
    """Every model of the store, servable by name without being listed at start."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = ModelStore(settings.model_dir)

    def names(self) -> list[str]:
        return [m.name for m in self.store.models() if m.manifest.kind == "chat"]

    def adapters(self) -> list[AdapterFile]:
        return [
            AdapterFile(m.name, m.path, m.manifest.base, m.manifest.display_name)
            for m in self.store.models()
            if m.manifest.kind == "adapter"
        ]

    def build(self, name: str) -> Engine | None:
        stored = self.store.find(name)
        if stored is None or stored.manifest.kind != "chat":
            return None
        try:
            return engine_for(stored.spec(), self.settings)
        except ModelSpecError as exc:
            log.warning("%s", exc.message)
            return None


def keep_alives(settings: Settings) -> dict[str, float | None]:
    """The models whose keep_alive the settings' ``model_options`` set."""
    return {
        name: options.keep_alive
        for name, options in settings.model_options.items()
        if "keep_alive" in options.model_fields_set
    }


def pool_of(settings: Settings) -> Callable[[Engine], Pool]:
    """Where a model's weights and cache will live: a CTranslate2 model on a usable CUDA
    GPU in its memory (``--max-vram``); everything else in this machine's (llama.cpp is
    built for the CPU here). The GPU is probed once, at the first load that asks."""

    @functools.cache
    def device(requested: str) -> str:
        try:
            return pick_device(requested, detect_cuda())
        except DeviceError:
            return "cpu"  # the load itself says what is wrong

    def pool(engine: Engine) -> Pool:
        if engine.kind == "ctranslate2" and device(settings.device) == "cuda":
            return "vram"
        return "memory"

    return pool


def build_registry(settings: Settings) -> tuple[EngineRegistry, list[str]]:
    """Engines for every ``--model`` (loaded at start) and, on demand, for the models of the
    store; specs that name nothing are returned as problems."""

    def size(engine: Engine) -> int:
        path = getattr(engine, "path", None)
        if not isinstance(path, Path):
            return 0
        spec = ModelSpec(engine.model_id, path, engine.kind)
        return estimate(spec, ctx_size=settings.ctx_size, parallel=settings.parallel).total

    registry = EngineRegistry(
        catalog=StoreCatalog(settings),
        estimate=size,
        max_memory=settings.max_memory,
        max_vram=settings.max_vram,
        pool_of=pool_of(settings),
        keep_alive=settings.keep_alive,
        keep_alive_for=keep_alives(settings),
    )
    problems: list[str] = []
    for raw in settings.model:
        try:
            spec = resolve(raw, settings.model_dir)
            registry.add(engine_for(spec, settings), at_start=True)
        except ModelNotFound:
            message = (
                f"model '{raw}' not found: it is not 'default', not a file, and not "
                f"a model in the store ({settings.model_dir})"
            )
        except (OcakError, ValueError) as exc:
            message = exc.message if isinstance(exc, OcakError) else str(exc)
        else:
            continue
        problems.append(message)
        log.error("%s", message)
    return registry, problems
