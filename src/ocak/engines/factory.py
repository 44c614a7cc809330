"""Build the engines a server runs from its settings."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from ocak.config import Settings
from ocak.engines.base import Engine
from ocak.engines.registry import EngineRegistry
from ocak.errors import ModelNotFound, OcakError
from ocak.models.store import ModelSpec, resolve
from ocak.plugins import Registry, UnknownKind

log = logging.getLogger("ocak.engines")


class ModelSpecError(OcakError):
    """A ``--model`` value that names nothing ocak can load."""


EngineBuilder = Callable[[str, Path, Settings], Engine]
# Engine kinds by name: entry points of the group "ocak.engines" (pyproject.toml).
ENGINES: Registry[EngineBuilder] = Registry("ocak.engines")


def engine_for(spec: ModelSpec, settings: Settings) -> Engine:
    """The engine that serves ``spec``, configured from ``settings``."""
    try:
        builder = ENGINES.get(spec.engine)
    except UnknownKind:
        raise ModelSpecError(f"no engine can serve {spec.path} (kind {spec.engine})") from None
    return builder(spec.id, spec.path, settings)


def build_registry(settings: Settings) -> tuple[EngineRegistry, list[str]]:
    """Engines for every ``--model``; specs that name nothing are returned as problems."""
    registry = EngineRegistry()
    problems: list[str] = []
    for raw in settings.model:
        try:
            spec = resolve(raw, settings.model_dir)
            registry.add(engine_for(spec, settings))
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
