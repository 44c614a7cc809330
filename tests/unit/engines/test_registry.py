"""Models on demand (fake engines): one load for concurrent first requests, keep_alive,
least-recently-used eviction within a memory budget, unloading that lets requests finish,
and a request for a model being unloaded waiting for the reload."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from ocak.engines.base import Engine
from ocak.engines.fake import FakeEngine
from ocak.engines.registry import AdapterFile, EngineRegistry, NotEnoughMemory
from ocak.errors import ModelNotFound, Unavailable
from ocak.protocol.generation import Finished, GenerationRequest, Message

MIB = 1 << 20


class Counted(FakeEngine):
    """A fake engine that counts its loads and unloads."""

    def __init__(self, model_id: str, **kw: Any) -> None:
        super().__init__(model_id, **kw)
        self.loaded = 0
        self.closed = 0

    async def load(self) -> None:
        await super().load()
        self.loaded += 1

    async def close(self) -> None:
        await super().close()
        self.closed += 1


class Store:
    """A catalog: models servable by name, built unloaded on first mention."""

    def __init__(self, *engines: Engine) -> None:
        self.engines = {e.model_id: e for e in engines}
        self.built: list[str] = []

    def names(self) -> list[str]:
        return list(self.engines)

    def build(self, name: str) -> Engine | None:
        self.built.append(name)
        return self.engines.get(name)

    def adapters(self) -> list[AdapterFile]:
        return []


def run(check: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(check())


def request(model: str) -> GenerationRequest:
    return GenerationRequest(model=model, messages=[Message("user", "hi")], max_tokens=4)


def test_concurrent_first_requests_share_one_load_and_wait_for_it() -> None:
    engine = Counted("a", load_delay=0.2)
    store = Store(engine)
    registry = EngineRegistry(catalog=store, keep_alive=None)

    async def check() -> None:
        assert "a" in registry and engine.state == "unloaded"  # known, not loaded
        assert [e.model_id for e in registry] == ["a"]
        got = await asyncio.gather(*(registry.acquire("a") for _ in range(5)))
        assert all(e is engine for e in got) and engine.loaded == 1
        assert registry.residency("a").inflight == 5  # type: ignore[union-attr]
        for _ in got:
            registry.release("a")
        assert registry.loads["a"] == 1 and registry.load_seconds["a"] >= 0.2
        with pytest.raises(ModelNotFound):
            await registry.acquire("nope")

    run(check)


def test_keep_alive_unloads_idle_models_and_a_request_can_set_its_own() -> None:
    a, b, c = Counted("a"), Counted("b"), Counted("c")
    registry = EngineRegistry(catalog=Store(a, b, c), keep_alive=0.05, keep_alive_for={"c": None})

    async def check() -> None:
        for name in "abc":
            await registry.load(name)
        # "b" is in use: its keep_alive starts only when it is released.
        await registry.acquire("b", keep_alive=0)
        await asyncio.sleep(0.15)
        assert (a.state, b.state, c.state) == ("unloaded", "ready", "ready")
        assert registry.evictions[("a", "idle")] == 1
        registry.release("b")  # keep_alive 0 (the request's own): unloaded at once
        await asyncio.sleep(0.02)
        assert b.state == "unloaded" and c.state == "ready"  # c: keep_alive -1, never
        # The next request loads it again.
        events = [e async for e in registry.generate("a", request("a"))]
        assert isinstance(events[-1], Finished) and a.loaded == 2
        assert registry.residency("a").inflight == 0  # type: ignore[union-attr]

    run(check)


def test_a_memory_budget_evicts_the_least_recently_used_idle_model() -> None:
    engines = {n: Counted(n) for n in "abc"}
    sizes = {"a": 50 * MIB, "b": 30 * MIB, "c": 40 * MIB}
    registry = EngineRegistry(
        catalog=Store(*engines.values()),
        estimate=lambda e: sizes[e.model_id],
        max_memory=100 * MIB,
        keep_alive=None,
    )

    async def check() -> None:
        await registry.load("a")
        await registry.load("b")  # 80 MiB: both fit
        await registry.acquire("a")
        registry.release("a")  # a is now the more recently used
        await registry.load("c")  # 120 MiB would not fit: b (least recently used) goes
        assert engines["b"].state == "unloaded" and engines["a"].state == "ready"
        assert registry.evictions[("b", "memory")] == 1
        # Busy models are never evicted: a clear error with the numbers instead.
        await registry.acquire("a")
        await registry.acquire("c")
        with pytest.raises(
            NotEnoughMemory,
            match=r"needs about 30 MiB of memory; 90 of the 100 MiB budget \(--max-memory\) "
            r".*a \(50 MiB\), c \(40 MiB\)",
        ):
            await registry.load("b")
        registry.release("a")
        registry.release("c")
        sizes["b"] = 200 * MIB
        with pytest.raises(NotEnoughMemory, match=r"200 MiB.*budget of 100 MiB"):
            await registry.load("b")

    run(check)


def test_models_on_a_gpu_are_budgeted_against_its_memory_apart() -> None:
    engines = {n: Counted(n) for n in ("cpu", "gpu1", "gpu2")}
    registry = EngineRegistry(
        catalog=Store(*engines.values()),
        estimate=lambda e: 60 * MIB,
        max_memory=100 * MIB,
        max_vram=100 * MIB,
        pool_of=lambda e: "vram" if e.model_id.startswith("gpu") else "memory",
        keep_alive=None,
    )

    async def check() -> None:
        await registry.load("cpu")
        await registry.load("gpu1")  # 120 MiB in all, but 60 in each budget: both stay
        assert engines["cpu"].state == engines["gpu1"].state == "ready"
        await registry.load("gpu2")  # the GPU is full: the idle GPU model makes room
        assert engines["gpu1"].state == "unloaded" and engines["cpu"].state == "ready"
        assert registry.residency("gpu2").pool == "vram"  # type: ignore[union-attr]
        await registry.acquire("gpu2")
        with pytest.raises(NotEnoughMemory, match=r"of GPU memory.*--max-vram"):
            await registry.load("gpu1")
        registry.release("gpu2")

    run(check)


def test_unloading_lets_requests_finish_and_a_new_request_waits_for_the_reload() -> None:
    engine = Counted("a", delay=0.05, script=lambda r: "one two three four")
    registry = EngineRegistry(catalog=Store(engine), keep_alive=None)

    async def check() -> None:
        stream = registry.generate("a", request("a"))
        first = await anext(stream)
        unloading = asyncio.ensure_future(registry.unload("a"))
        await asyncio.sleep(0.02)
        assert not unloading.done() and engine.state == "ready"  # the stream is in flight
        late = asyncio.ensure_future(registry.acquire("a"))  # arrives while unloading
        rest = [e async for e in stream]
        assert isinstance(rest[-1], Finished) and first is not None  # not cut
        assert await unloading is True
        got = await late
        assert got is engine and engine.closed == 1 and engine.loaded == 2
        registry.release("a")
        assert await registry.unload("a") is True
        assert await registry.unload("a") is False  # not loaded

    run(check)


def test_a_failed_load_is_a_clear_error_and_is_tried_again() -> None:
    engine = Counted("a", fail_load="the file is truncated")
    registry = EngineRegistry(catalog=Store(engine))

    async def check() -> None:
        with pytest.raises(Unavailable, match="failed to load: the file is truncated"):
            await registry.acquire("a")
        assert registry.residency("a").inflight == 0  # type: ignore[union-attr]
        engine.fail_load = None
        assert await registry.acquire("a") is engine

    run(check)


def test_start_up_models_define_health_and_forgetting_a_store_model() -> None:
    start = Counted("default")
    extra = Counted("x")
    registry = EngineRegistry([start], catalog=Store(extra), keep_alive=0)

    async def check() -> None:
        assert registry.loading  # until the start-up loads have run
        await registry.load_all()
        assert not registry.loading
        await asyncio.sleep(0.01)
        assert start.state == "unloaded" and registry.servable == [start]  # still servable
        await registry.load("x")
        await registry.forget("x")
        assert registry.residency("x") is None and extra.state == "unloaded"

    run(check)
