"""The local models a server can serve, loaded on demand within a memory budget.

Every model the server knows is servable by name: those given at start (loaded
then) and, through a ``Catalog``, every model in the store (an engine is made for
it, unloaded, the first time it is named). ``acquire`` loads a model the first
time a request needs it: concurrent first requests share one load, and wait for
it rather than fail. Before a load the registry makes room: it estimates the
model's memory (weights + KV cache) and, with a budget (``--max-memory``),
unloads idle models least recently used first; a model that cannot fit even then
is a clear error naming the numbers. A model that runs on a GPU is budgeted
against ``--max-vram`` instead (its weights and cache live there). A model left
idle for its ``keep_alive`` (the server's default, per model, or the last
request's own) is unloaded;
``None`` keeps it loaded, ``0`` unloads it as soon as it is idle. Unloading waits
for the requests in flight to finish; a request that arrives meanwhile waits and
gets the model loaded again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from ocak.engines.base import Engine
from ocak.errors import ModelNotFound, OcakError, Unavailable
from ocak.protocol.generation import Finished, GenerationEvent, GenerationRequest

log = logging.getLogger("ocak.engines")
MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class AdapterFile:
    """A stored LoRA adapter: its file, and the model its manifest says it is for."""

    name: str
    path: Path
    base: str | None = None
    display: str | None = None  # a second name (a fine-tuned model's ft:BASE:ORG:SUFFIX:ID)


class Catalog(Protocol):
    """Models servable without being listed at start (the store)."""

    def names(self) -> list[str]: ...

    def build(self, name: str) -> Engine | None:
        """An engine for ``name``, not loaded; None when the catalog has no such model."""

    def adapters(self) -> list[AdapterFile]: ...


Estimate = Callable[[Engine], int]  # bytes an engine holds once loaded (weights, KV cache)
Pool = Literal["memory", "vram"]  # where those bytes live: this machine's memory, a GPU's


class NotEnoughMemory(OcakError):
    status = 503
    type = "server_error"
    code = "insufficient_memory"


@dataclass(eq=False)
class Residency:
    """How one model lives in memory: who uses it, for how long it stays, what it holds."""

    default_keep_alive: float | None  # the server's or the model's setting
    keep_alive: float | None = None  # now: seconds idle before unloading (None: never)
    inflight: int = 0
    last_used: float = 0.0
    resident: int = 0  # estimated bytes while loaded
    pool: Pool = "memory"  # where they are
    loaded_at: float | None = None  # wall clock, while loaded
    draining: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    timer: asyncio.TimerHandle | None = None
    expires_at: float | None = None  # wall clock

    def __post_init__(self) -> None:
        self.keep_alive = self.default_keep_alive
        self.idle.set()


class EngineRegistry:
    """The engines by model id; loads, keeps and unloads them (see the module doc)."""

    def __init__(
        self,
        engines: Iterable[Engine] = (),
        *,
        catalog: Catalog | None = None,
        estimate: Estimate | None = None,
        max_memory: int | None = None,
        max_vram: int | None = None,
        pool_of: Callable[[Engine], Pool] | None = None,
        keep_alive: float | None = None,
        keep_alive_for: dict[str, float | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engines: dict[str, Engine] = {}
        self._res: dict[str, Residency] = {}
        self._from_catalog: set[str] = set()
        self.catalog = catalog
        self.estimate = estimate or (lambda engine: 0)
        self.budgets: dict[Pool, int | None] = {"memory": max_memory, "vram": max_vram}
        self.pool_of = pool_of or (lambda engine: "memory")
        self.keep_alive = keep_alive
        self.keep_alive_for = dict(keep_alive_for or {})
        self.clock = clock
        self.started = False  # the start-up loads have run
        self.startup: list[str] = []  # the models given at start, the default first
        self.loads: Counter[str] = Counter()
        self.load_seconds: dict[str, float] = {}
        self.evictions: Counter[tuple[str, str]] = Counter()  # (model, reason)
        for engine in engines:
            self.add(engine, at_start=True)

    # -- what is known -------------------------------------------------------------

    def add(self, engine: Engine, *, at_start: bool = False) -> None:
        """Know ``engine``; ``at_start``: one of the models loaded at start (the first one
        is the default)."""
        if engine.model_id in self._engines:
            raise ValueError(f"two models share the id '{engine.model_id}'")
        self._engines[engine.model_id] = engine
        if at_start:
            self.startup.append(engine.model_id)
        default = self.keep_alive_for.get(engine.model_id, self.keep_alive)
        self._res[engine.model_id] = Residency(default_keep_alive=default)

    def _known(self) -> list[Engine]:
        if self.catalog is not None:
            names = self.catalog.names()
            for name in names:
                self.find(name)
            for name in [n for n in self._from_catalog if n not in names]:
                self._drop_if_gone(name, names)
        return list(self._engines.values())

    def _drop_if_gone(self, model_id: str, names: list[str] | None = None) -> bool:
        """Forget an unloaded model the catalog no longer has (its files were removed)."""
        engine = self._engines.get(model_id)
        if engine is None or model_id not in self._from_catalog or engine.state == "ready":
            return False
        if self.catalog is None:
            return False
        if model_id in (names if names is not None else self.catalog.names()):
            return False
        self._remove(model_id)
        return True

    def _remove(self, model_id: str) -> None:
        self._engines.pop(model_id, None)
        self._res.pop(model_id, None)
        self._from_catalog.discard(model_id)

    def __iter__(self) -> Iterator[Engine]:
        return iter(self._known())

    def __contains__(self, model_id: str) -> bool:
        return self.find(model_id) is not None

    def find(self, model_id: str) -> Engine | None:
        """The engine for ``model_id`` (made, unloaded, for a model of the catalog)."""
        engine = self._engines.get(model_id)
        if engine is not None and engine.state != "ready" and self._drop_if_gone(model_id):
            engine = None
        if engine is None and self.catalog is not None:
            engine = self.catalog.build(model_id)
            if engine is not None:
                engine.state = "unloaded"
                self.add(engine)
                self._from_catalog.add(model_id)
        return engine

    async def forget(self, model_id: str) -> None:
        """A model removed from the store: unloaded (after its requests) and no longer known
        (a model given at start stays known; its next load says what is missing)."""
        if self.find(model_id) is None:
            return
        await self.unload(model_id, reason="removed")
        if model_id not in self.startup:
            self._remove(model_id)

    def adapters(self) -> list[AdapterFile]:
        """The LoRA adapters of the store."""
        return self.catalog.adapters() if self.catalog is not None else []

    def adapter(self, name: str) -> AdapterFile | None:
        return next((a for a in self.adapters() if name in (a.name, a.display)), None)

    def residency(self, model_id: str) -> Residency | None:
        return self._res.get(model_id)

    # -- using a model ---------------------------------------------------------------

    async def acquire(self, model_id: str, *, keep_alive: float | bool | None = False) -> Engine:
        """The loaded engine for ``model_id``, held until ``release``. ``keep_alive`` (seconds,
        None for ever; False: the model's default) applies once this request is done, as
        Ollama's does: a later request that sets none brings the default back."""
        engine = self.find(model_id)
        if engine is None:
            raise ModelNotFound(model_id)
        res = self._res[model_id]
        if keep_alive is False:
            res.keep_alive = res.default_keep_alive
        else:
            res.keep_alive = keep_alive if keep_alive is None else float(keep_alive)
        if engine.state != "ready" or res.draining:
            async with res.lock:  # a load or an unload in progress: wait for it
                if engine.state != "ready":
                    await self._load(engine, res)
        res.inflight += 1
        res.idle.clear()
        res.last_used = self.clock()
        self._cancel_timer(res)
        return engine

    def release(self, model_id: str) -> None:
        res = self._res[model_id]
        res.inflight -= 1
        res.last_used = self.clock()
        if res.inflight == 0:
            res.idle.set()
            self._schedule_expiry(model_id, res)

    async def generate(
        self, model_id: str, request: GenerationRequest, *, keep_alive: float | bool | None = False
    ) -> AsyncIterator[GenerationEvent]:
        """``engine.generate`` with the model held for the whole stream."""
        engine = await self.acquire(model_id, keep_alive=keep_alive)
        async for event in self.held(model_id, engine.generate(request)):
            yield event

    async def held(
        self, model_id: str, events: AsyncIterator[GenerationEvent]
    ) -> AsyncIterator[GenerationEvent]:
        """``events`` of an acquired engine; the model is released at the stream's end
        (its last event), or when the stream is closed or fails."""
        released = False
        try:
            async for event in events:
                if isinstance(event, Finished):
                    # The engine's own cleanup runs now, not when a collector finds it.
                    await _close(events)
                    released = True
                    self.release(model_id)
                yield event
        finally:
            await _close(events)
            if not released:
                self.release(model_id)

    # -- loading and unloading --------------------------------------------------------

    async def load(self, model_id: str) -> Engine:
        """Load ``model_id`` now (``POST /v1/models/{id}/load``); its keep_alive starts."""
        engine = await self.acquire(model_id)
        self.release(model_id)
        return engine

    async def _load(self, engine: Engine, res: Residency) -> None:
        need, pool = self.estimate(engine), self.pool_of(engine)
        await self._make_room(engine.model_id, need, pool)
        started = time.monotonic()
        engine.state, engine.error = "loading", None
        try:
            await engine.load()
        except Exception as exc:  # a broken model must not take the server down
            engine.state, engine.error = "error", str(exc)
        if not _is_ready(engine):
            log.error("model %s failed to load: %s", engine.model_id, engine.error)
            raise Unavailable(f"The model '{engine.model_id}' failed to load: {engine.error}")
        seconds = time.monotonic() - started
        self.loads[engine.model_id] += 1
        self.load_seconds[engine.model_id] = self.load_seconds.get(engine.model_id, 0.0) + seconds
        res.resident, res.pool, res.loaded_at = need, pool, time.time()
        log.info("model %s loaded in %.1fs (about %d MiB)", engine.model_id, seconds, need // MIB)

    async def unload(self, model_id: str, reason: str = "request") -> bool:
        """Unload ``model_id`` once its requests in flight have finished; False if it was not
        loaded."""
        engine = self.find(model_id)
        if engine is None:
            raise ModelNotFound(model_id)
        res = self._res[model_id]
        async with res.lock:
            if engine.state != "ready":
                return False
            res.draining = True
            try:
                await res.idle.wait()
                await self._close(engine, res, reason)
            finally:
                res.draining = False
        return True

    async def _close(self, engine: Engine, res: Residency, reason: str) -> None:
        self._cancel_timer(res)
        await engine.close()
        engine.state = "unloaded"
        res.resident, res.loaded_at = 0, None
        self.evictions[(engine.model_id, reason)] += 1
        log.info("model %s unloaded (%s)", engine.model_id, reason)

    async def _make_room(self, model_id: str, need: int, pool: Pool = "memory") -> None:
        """Unload idle models of ``pool``, least recently used first, until ``need`` fits its
        budget (``--max-memory``, or ``--max-vram`` for a model on a GPU)."""
        budget = self.budgets[pool]
        if budget is None:
            return
        what, flag = (
            ("memory", "--max-memory") if pool == "memory" else ("GPU memory", "--max-vram")
        )
        if need > budget:
            raise NotEnoughMemory(
                f"The model '{model_id}' needs about {need // MIB} MiB of {what} (weights and "
                f"KV cache), more than the budget of {budget // MIB} MiB ({flag}); "
                "raise it, or lower --ctx-size or --parallel."
            )
        while True:
            loaded = [
                (e, self._res[e.model_id])
                for e in self._engines.values()
                if e.state == "ready"
                and e.model_id != model_id
                and self._res[e.model_id].pool == pool
            ]
            used = sum(r.resident for _, r in loaded)
            if used + need <= budget:
                return
            idle = [(r.last_used, e, r) for e, r in loaded if r.inflight == 0 and not r.draining]
            if not idle:
                busy = ", ".join(f"{e.model_id} ({r.resident // MIB} MiB)" for e, r in loaded)
                raise NotEnoughMemory(
                    f"The model '{model_id}' needs about {need // MIB} MiB of {what}; "
                    f"{used // MIB} of the {budget // MIB} MiB budget ({flag}) are held by "
                    f"models serving requests now: {busy}. Try again when they finish.",
                    retry_after=5.0,
                )
            _, victim, res = min(idle, key=lambda item: item[0])
            await self._close(victim, res, "memory")

    def _schedule_expiry(self, model_id: str, res: Residency) -> None:
        self._cancel_timer(res)
        if res.keep_alive is None:
            return
        loop = asyncio.get_running_loop()
        res.expires_at = time.time() + res.keep_alive
        res.timer = loop.call_later(
            res.keep_alive, lambda: asyncio.ensure_future(self._expire(model_id))
        )

    async def _expire(self, model_id: str) -> None:
        res = self._res[model_id]
        res.timer = None
        if res.inflight == 0:
            with contextlib.suppress(OcakError):
                await self.unload(model_id, reason="idle")

    @staticmethod
    def _cancel_timer(res: Residency) -> None:
        if res.timer is not None:
            res.timer.cancel()
            res.timer = None
        res.expires_at = None

    # -- the whole set -----------------------------------------------------------------

    async def load_all(self) -> None:
        """Load the models given at start, concurrently; a failure is kept on its engine."""

        async def one(model_id: str) -> None:
            with contextlib.suppress(OcakError):
                await self.load(model_id)

        try:
            await asyncio.gather(*(one(m) for m in self.startup))
        finally:
            self.started = True

    async def close_all(self) -> None:
        for res in self._res.values():
            self._cancel_timer(res)
        await asyncio.gather(*(e.close() for e in self._engines.values()))

    @property
    def loading(self) -> bool:
        """The start-up loads are still running."""
        return not self.started and bool(self.startup)

    @property
    def ready(self) -> list[Engine]:
        """The engines loaded now."""
        return [e for e in self._engines.values() if e.state == "ready"]

    @property
    def servable(self) -> list[Engine]:
        """The models given at start that can answer: loaded, or unloaded after a good load."""
        engines = [self._engines[m] for m in self.startup]
        return [e for e in engines if e.state in ("ready", "unloaded", "loading")]

    @property
    def failed(self) -> list[Engine]:
        return [e for e in self._engines.values() if e.state == "error"]


def _is_ready(engine: Engine) -> bool:
    """``engine.state == "ready"``, read afresh (``load`` changes it behind mypy's back)."""
    return engine.state == "ready"


async def _close(events: AsyncIterator[GenerationEvent]) -> None:
    close = getattr(events, "aclose", None)
    if close is not None:
        await close()
