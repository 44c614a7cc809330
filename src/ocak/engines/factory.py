"""Build the engines a server runs from its settings."""

from __future__ import annotations

import logging

from ocak.config import Settings
from ocak.engines.base import Engine
from ocak.engines.registry import EngineRegistry
from ocak.errors import ModelNotFound, OcakError
from ocak.models.store import ModelSpec, resolve

log = logging.getLogger("ocak.engines")


class ModelSpecError(OcakError):
    """A ``--model`` value that names nothing ocak can load."""


def engine_for(spec: ModelSpec, settings: Settings) -> Engine:
    """The engine that serves ``spec``, configured from ``settings``."""
    if spec.engine == "llama.cpp":
        from ocak.engines.llamacpp.engine import LlamaCppEngine

        return LlamaCppEngine(
            spec.id,
            spec.path,
            ctx_size=settings.ctx_size,
            parallel=settings.parallel,
            threads=settings.threads,
            max_queue=settings.max_queue,
            queue_timeout=settings.queue_timeout,
            prefill_chunk=settings.prefill_chunk,
        )
    if spec.engine == "ctranslate2":
        from ocak.engines.ctranslate2.engine import engine_from_settings

        return engine_from_settings(spec.id, spec.path, settings)
    raise ModelSpecError(f"no engine can serve {spec.path} (kind {spec.engine})")


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
