"""Per-key limits as pure logic on a fake clock: rpm, tpm, budgets, Retry-After values."""

from __future__ import annotations

import pytest

from ocak.errors import QuotaExceeded, RateLimited
from ocak.server.limits import Limiter, budget_window_start
from ocak.store.keys import KeyInfo


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make(**kw: object) -> tuple[Limiter, Clock]:
    clock = Clock()
    return Limiter(clock=clock, wall=clock), clock


def key(**kw: object) -> KeyInfo:
    return KeyInfo(id=1, name="k", prefix="ocak-xxxx", created_at=1000.0, **kw)  # type: ignore[arg-type]


def test_requests_per_minute_slide_and_say_when_to_retry() -> None:
    limiter, clock = make()
    k = key(rpm=3)
    for dt in (0, 10, 20):
        clock.t = 1000 + dt
        limiter.admit(k)
    clock.t = 1030
    with pytest.raises(RateLimited) as info:
        limiter.admit(k)
    assert info.value.retry_after == pytest.approx(30.0)  # the first request ages out at 1060
    assert info.value.status == 429
    clock.t = 1060.5
    limiter.admit(k)
    with pytest.raises(RateLimited):
        limiter.admit(k)


def test_refused_requests_do_not_use_up_the_rate() -> None:
    limiter, clock = make()
    k = key(rpm=1)
    limiter.admit(k)
    for _ in range(5):
        with pytest.raises(RateLimited):
            limiter.admit(k)
    clock.t += 60.1
    limiter.admit(k)


def test_tokens_per_minute_count_finished_requests() -> None:
    limiter, clock = make()
    k = key(tpm=100)
    limiter.admit(k)
    limiter.charge(k, 60)
    clock.t += 5
    limiter.admit(k)  # 60 < 100: still admitted
    limiter.charge(k, 50)
    clock.t += 5
    with pytest.raises(RateLimited) as info:
        limiter.admit(k)
    # Dropping the first 60 tokens (charged at 1000) brings the window under 100.
    assert info.value.retry_after == pytest.approx(50.0)
    assert "100 tokens per minute" in info.value.message
    clock.t = 1060.5
    limiter.admit(k)


def test_a_lifetime_budget_is_refused_without_a_retry_time() -> None:
    limiter, _ = make()
    k = key(budget_tokens=100)
    limiter.admit(k)
    limiter.charge(k, 99)
    limiter.admit(k)
    limiter.charge(k, 5)
    with pytest.raises(QuotaExceeded) as info:
        limiter.admit(k)
    assert info.value.code == "insufficient_quota" and info.value.status == 429
    assert info.value.retry_after is None


def test_a_periodic_budget_renews_and_says_when() -> None:
    limiter, clock = make()
    k = key(budget_tokens=10, budget_period=3600.0)
    clock.t = 1000 + 100
    limiter.charge(k, 10)
    with pytest.raises(QuotaExceeded) as info:
        limiter.admit(k)
    assert info.value.retry_after == pytest.approx(3500.0)
    clock.t = 1000 + 3600 + 1
    limiter.admit(k)  # a new period began


def test_budget_windows_align_to_the_key_creation() -> None:
    k = key(budget_tokens=1, budget_period=100.0)
    assert budget_window_start(k, 1000.0) == 1000.0
    assert budget_window_start(k, 1250.0) == 1200.0
    assert budget_window_start(key(budget_tokens=1), 99999.0) == 1000.0


def test_seeded_budget_usage_counts() -> None:
    limiter, _ = make()
    k = key(budget_tokens=50)
    limiter.set_budget_used(k, 50, 1000.0)
    with pytest.raises(QuotaExceeded):
        limiter.admit(k)


def test_a_key_without_limits_is_never_refused() -> None:
    limiter, _ = make()
    k = key()
    for _ in range(1000):
        limiter.admit(k)
        limiter.charge(k, 10_000)
