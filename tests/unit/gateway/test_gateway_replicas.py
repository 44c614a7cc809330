"""Replicas behind the gateway: health checks over real HTTP, least-busy order from each
replica's reported load and the requests sent since, session affinity by rendezvous
hashing, and unhealthy replicas last."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway_stubs import remote_target
from helpers import AppServer, free_port
from ocak.config.gateway import ProviderConfig
from ocak.engines.registry import EngineRegistry
from ocak.gateway.health import load_of
from ocak.gateway.router import Alias, RemoteTarget, Router
from ocak.providers.base import Http
from ocak.providers.errors import Secrets
from ocak.providers.openai_compat import OpenAICompatible


def pool(*names: str, **alias: Any) -> tuple[Router, Alias]:
    targets: list[Any] = [remote_target(n) for n in names]
    router = Router({}, EngineRegistry([]))
    for t in targets:
        router.health.watch(t.provider, "/health", 1.0)
    return router, Alias("pool", targets, **alias)


def first(router: Router, alias: Alias, session: str | None = None) -> str:
    return router.order(alias, session)[0].name


def test_least_busy_goes_by_load_and_what_was_sent_since() -> None:
    router, alias = pool("r1", "r2", "r3", balance="least-busy")
    for name, load in (("r1", 5), ("r2", 0), ("r3", 2)):
        state = router.health.health(name)
        assert state is not None
        state.load = load
    assert first(router, alias) == "r2"
    for _ in range(3):
        router.health.sent("r2")  # three requests went there since its last report
    assert first(router, alias) == "r3"
    router.health.failed("r3", "connection refused")
    order = [t.name for t in router.order(alias)]
    assert order[-1] == "r3" and order[0] == "r2"  # the unhealthy one last, not dropped


def test_a_session_sticks_to_its_replica_and_only_a_lost_replicas_sessions_move() -> None:
    router, alias = pool("r1", "r2", "r3", affinity="session")
    sessions = [f"player-{i}" for i in range(300)]
    home = {s: first(router, alias, s) for s in sessions}
    assert all(first(router, alias, s) == home[s] for s in sessions)  # stable
    spread = Counter(home.values())
    assert len(spread) == 3 and min(spread.values()) > 60, spread  # spread out
    router.health.failed("r2", "killed")
    moved = {s: first(router, alias, s) for s in sessions}
    assert all(moved[s] == home[s] for s in sessions if home[s] != "r2")
    assert all(moved[s] != "r2" for s in sessions)
    assert first(router, alias) in ("r1", "r2", "r3")  # no session: the usual order


def test_loads_are_read_from_ocaks_health() -> None:
    body = {"status": "ok", "models": [{"id": "a", "active": 2, "queued": 3},
                                       {"id": "b", "state": "unloaded"}]}  # fmt: skip
    assert load_of(body) == 5 and load_of({"status": "ok"}) == 0 and load_of("ok") == 0


def test_health_checks_over_http_mark_replicas_up_and_down() -> None:
    def app(status: int) -> Starlette:
        async def health(request: Request) -> JSONResponse:
            body = {"status": "ok", "models": [{"id": "default", "active": 1, "queued": 2}]}
            return JSONResponse(body, status_code=status)

        return Starlette(routes=[Route("/health", health)])

    up, loading = AppServer(app(200)), AppServer(app(503))

    async def main() -> None:
        http = Http()
        router = Router({}, EngineRegistry([]))
        urls = {"up": up.url, "loading": loading.url, "gone": f"http://127.0.0.1:{free_port()}"}
        targets = []
        for name, url in urls.items():
            config = ProviderConfig(type="openai", preset="ocak", base_url=f"{url}/v1")
            provider = OpenAICompatible(name, config, key=None, http=http, secrets=Secrets([]))
            router.health.watch(provider, config.health or "", 1.0)
            targets.append(RemoteTarget(name=name, provider=provider, model="default"))
        states = {n: await router.health.check(n) for n in urls}
        assert states["up"].healthy and states["up"].load == 3
        assert not states["loading"].healthy and "503" in (states["loading"].error or "")
        assert not states["gone"].healthy
        alias = Alias("pool", list(targets), balance="least-busy")
        assert router.order(alias)[0].name == "up"
        await http.aclose()

    with up, loading:
        asyncio.run(main())
