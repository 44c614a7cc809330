"""The set of local engines a server process runs, keyed by model id."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator

from ocak.engines.base import Engine
from ocak.errors import ModelNotFound, Unavailable

log = logging.getLogger("ocak.engines")


class EngineRegistry:
    """Holds engines, loads them together, and finds the one serving a model id."""

    def __init__(self, engines: Iterable[Engine] = ()) -> None:
        self._engines: dict[str, Engine] = {}
        for engine in engines:
            self.add(engine)

    def add(self, engine: Engine) -> None:
        if engine.model_id in self._engines:
            raise ValueError(f"two models share the id '{engine.model_id}'")
        self._engines[engine.model_id] = engine

    def __iter__(self) -> Iterator[Engine]:
        return iter(list(self._engines.values()))

    def __len__(self) -> int:
        return len(self._engines)

    def __contains__(self, model_id: str) -> bool:
        return model_id in self._engines

    def find(self, model_id: str) -> Engine | None:
        return self._engines.get(model_id)

    def get(self, model_id: str) -> Engine:
        """The ready engine for ``model_id``; 404 if unknown, 503 while loading or failed."""
        engine = self._engines.get(model_id)
        if engine is None:
            raise ModelNotFound(model_id)
        if engine.state == "loading":
            raise Unavailable(f"The model '{model_id}' is still loading.", retry_after=1.0)
        if engine.state != "ready":
            raise Unavailable(f"The model '{model_id}' is unavailable: {engine.error}")
        return engine

    async def load_all(self) -> None:
        """Load every engine concurrently; failures are recorded on the engine."""

        async def one(engine: Engine) -> None:
            try:
                await engine.load()
            except Exception as exc:  # a broken model must not take the others down
                engine.state, engine.error = "error", str(exc)
            if engine.state == "error":
                log.error("model %s failed to load: %s", engine.model_id, engine.error)
            else:
                log.info("model %s ready", engine.model_id)

        await asyncio.gather(*(one(e) for e in self._engines.values()))

    async def close_all(self) -> None:
        await asyncio.gather(*(e.close() for e in self._engines.values()))

    @property
    def loading(self) -> bool:
        return any(e.state == "loading" for e in self._engines.values())

    @property
    def ready(self) -> list[Engine]:
        return [e for e in self._engines.values() if e.state == "ready"]

    @property
    def failed(self) -> list[Engine]:
        return [e for e in self._engines.values() if e.state == "error"]
