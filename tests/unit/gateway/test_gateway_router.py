"""The router's logic: backoff with jitter, the circuit breaker, weighted order, fallback rules.

These drive the real ``Router`` with attempts that succeed or raise ocak errors;
the HTTP behaviour over real upstreams is in ``test_gateway_server.py``.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import pytest

from gateway_stubs import remote_target
from ocak.config.gateway import RoutingConfig
from ocak.engines.fake import FakeEngine
from ocak.engines.registry import EngineRegistry
from ocak.errors import ContextLengthExceeded, ModelNotFound, OcakError, QueueFull, Unavailable
from ocak.gateway.router import Alias, Breaker, LocalTarget, Router, Target, backoff
from ocak.providers.base import Locality
from ocak.providers.errors import (
    LocalityRefused,
    UpstreamBroken,
    UpstreamRateLimited,
    UpstreamRefused,
    UpstreamTimeout,
)

FAST = RoutingConfig(backoff=0.001, backoff_max=0.002, retry_after_max=0.05)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    routing = RoutingConfig(backoff=0.2, backoff_max=1.0)
    rng = random.Random(7)
    for attempt, ceiling in [(0, 0.2), (1, 0.4), (2, 0.8), (3, 1.0), (9, 1.0)]:
        delays = [backoff(attempt, None, routing, rng) for _ in range(200)]
        assert all(d is not None and ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 100  # jittered, not one value


def test_backoff_honours_retry_after_up_to_a_limit() -> None:
    routing = RoutingConfig(retry_after_max=10)
    assert backoff(0, 3.0, routing, random.Random()) == 3.0
    assert backoff(0, 11.0, routing, random.Random()) is None  # go to the next target


def test_breaker_opens_after_failures_then_lets_one_probe_through() -> None:
    clock = Clock()
    b = Breaker(threshold=2, cooldown=30, clock=clock)
    assert b.allow()
    b.failure()
    assert b.allow() and b.state == "closed"
    b.failure()
    assert b.state == "open" and not b.allow()
    clock.now += 29
    assert not b.allow()
    clock.now += 2
    assert b.state == "half-open"
    assert b.allow()  # the probe
    assert not b.allow()  # only one at a time
    b.failure()  # the probe failed: open again for a full cooldown
    assert not b.allow()
    clock.now += 31
    assert b.allow()
    b.success()
    assert b.state == "closed" and b.allow() and b.allow()


def target(name: str, engine: str | None = None, **kw: Any) -> Target:
    """A local target when ``engine`` is given, else one on a remote provider."""
    if engine is not None:
        return LocalTarget(name=name, engine=engine, **kw)
    return remote_target(name, **kw)


def router(*targets: Target, locality: str | None = None, rng: int = 1) -> Router:
    engines = EngineRegistry([FakeEngine("default")])
    alias = Alias("a", list(targets), locality=locality)
    return Router({"a": alias}, engines, FAST, rng=random.Random(rng))


Script = dict[str, list[OcakError | None]]


def scripted(script: Script, calls: list[str]):  # type: ignore[no-untyped-def]
    async def attempt(t: Target) -> tuple[str, Locality]:
        calls.append(t.name)
        steps = script.get(t.name, [])
        outcome = steps.pop(0) if steps else None
        if outcome is not None:
            raise outcome
        return f"served by {t.name}", "remote"

    return attempt


def run(r: Router, script: Script, local_only: bool = False) -> tuple[str, list[str]]:
    calls: list[str] = []
    served = asyncio.run(r.run("a", scripted(script, calls), local_only=local_only))
    return served.result, calls


def test_fallback_on_5xx_429_timeouts_and_connection_errors() -> None:
    for failure in (
        UpstreamBroken("500"),
        UpstreamRateLimited("429", retry_after=0.0),
        UpstreamTimeout("slow"),
        QueueFull("busy"),
        Unavailable("loading"),
    ):
        r = router(target("x"), target("y", rank=1))
        result, calls = run(r, {"x": [failure]})
        assert result == "served by y" and calls == ["x", "y"], failure


def test_client_errors_and_refusals_of_ocaks_key_do_not_fall_back() -> None:
    for failure in (
        ContextLengthExceeded(prompt_tokens=9, max_tokens=9, context=8),
        UpstreamRefused("401"),
    ):
        r = router(target("x"), target("y", rank=1))
        calls: list[str] = []
        with pytest.raises(type(failure)):
            asyncio.run(r.run("a", scripted({"x": [failure]}, calls)))
        assert calls == ["x"]


def test_retries_the_same_target_before_the_next_but_not_after_a_timeout() -> None:
    r = router(target("x", retries=2), target("y", rank=1))
    result, calls = run(r, {"x": [UpstreamBroken("500"), UpstreamRateLimited("429")]})
    assert (result, calls) == ("served by x", ["x", "x", "x"])
    r = router(target("x", retries=2), target("y", rank=1))
    result, calls = run(r, {"x": [UpstreamTimeout("slow")]})
    assert (result, calls) == ("served by y", ["x", "y"])


def test_a_retry_after_longer_than_allowed_moves_on_at_once() -> None:
    r = router(target("x", retries=3), target("y", rank=1))
    result, calls = run(r, {"x": [UpstreamRateLimited("429", retry_after=60)]})
    assert (result, calls) == ("served by y", ["x", "y"])


def test_when_every_target_fails_the_last_failure_is_the_answer() -> None:
    r = router(target("x"), target("y", rank=1))
    with pytest.raises(UpstreamRateLimited):
        asyncio.run(
            r.run(
                "a",
                scripted({"x": [UpstreamBroken("500")], "y": [UpstreamRateLimited("429")]}, []),
            )
        )


def test_an_open_breaker_skips_its_target_then_probes_it() -> None:
    clock = Clock()
    breaker = Breaker(2, 10, clock)
    r = router(target("x", breaker=breaker), target("y", rank=1))
    script: Script = {"x": [UpstreamBroken("500")] * 2}
    assert run(r, script)[1] == ["x", "y"]
    assert run(r, script)[1] == ["x", "y"]
    assert run(r, script)[1] == ["y"]  # open: skipped
    clock.now += 11
    assert run(r, script)[1] == ["x"]  # the probe succeeds: closed again
    assert breaker.state == "closed"


def test_every_target_cooling_down_is_a_503_with_retry_after() -> None:
    clock = Clock()
    breaker = Breaker(1, 20, clock)
    breaker.failure()
    r = router(target("x", breaker=breaker))
    with pytest.raises(Unavailable) as info:
        run(r, {})
    assert info.value.retry_after == 20


def test_replicas_share_load_by_weight_and_ranks_come_first() -> None:
    r = router(target("x", weight=3), target("y", weight=1), target("z", rank=1), rng=5)
    firsts = Counter(r.order(r.aliases["a"])[0].name for _ in range(4000))
    assert firsts["z"] == 0
    assert 2800 < firsts["x"] < 3200 and 800 < firsts["y"] < 1200
    assert all(r.order(r.aliases["a"])[-1].name == "z" for _ in range(50))


def test_local_only_keeps_local_targets_and_refuses_when_none() -> None:
    r = router(target("remote"), target("local/default", rank=1, engine="default"))
    _, calls = run(r, {}, local_only=True)
    assert calls == ["local/default"]
    r = router(target("remote"))
    with pytest.raises(LocalityRefused):
        run(r, {}, local_only=True)
    r = router(target("remote"), locality="local")  # the alias itself is local-only
    with pytest.raises(LocalityRefused):
        run(r, {})


def test_a_local_engine_id_is_a_model_name_and_unknown_names_are_404() -> None:
    r = router(target("x"))
    alias = r.resolve("default")
    assert alias.direct and [t.name for t in alias.targets] == ["local/default"]
    with pytest.raises(ModelNotFound):
        r.resolve("nope")
