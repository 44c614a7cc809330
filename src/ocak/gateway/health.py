"""Health and load of upstream replicas: each provider with a health path (the ``ocak`` and
``vllm`` presets have ``/health``) is polled every ``health_interval`` seconds.

A provider is healthy while its health path answers 200; ocak's ``/health`` also says how
many sequences each model decodes and how many wait (``active``, ``queued``), which is the
replica's load. The router puts unhealthy replicas last (tried only when every other one
failed) and, for an alias with ``balance: least-busy``, orders replicas of one rank by
load: the last reported one plus the requests this gateway sent since that report, so
a burst between two polls does not all go to the replica that was idle at the last one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from ocak.providers.base import Provider

log = logging.getLogger("ocak.gateway")


@dataclass(slots=True)
class Health:
    healthy: bool = True  # until a check says otherwise: a new provider is tried
    load: int = 0  # sequences active plus queued at the last check
    sent: int = 0  # requests this gateway sent it since the last check
    checked_at: float = 0.0
    error: str | None = None

    @property
    def busy(self) -> int:
        return self.load + self.sent


def health_url(provider: Provider, path: str) -> str:
    """``path`` on the provider's origin (a base URL names its API, ``.../v1``)."""
    parts = urlsplit(provider.url)
    return f"{parts.scheme}://{parts.netloc}{path}"


def load_of(body: Any) -> int:
    """Sequences active plus queued, from ocak's ``/health`` (0 for other servers)."""
    if not isinstance(body, dict):
        return 0
    total = 0
    for model in body.get("models") or []:
        if isinstance(model, dict):
            total += int(model.get("active") or 0) + int(model.get("queued") or 0)
    return total


class HealthMonitor:
    """Polls the providers that have a health path; ``health(name)`` is what it knows."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._watched: dict[str, tuple[Provider, str, float]] = {}
        self._health: dict[str, Health] = {}
        self._task: asyncio.Task[None] | None = None

    def watch(self, provider: Provider, path: str, interval: float) -> None:
        self._watched[provider.name] = (provider, health_url(provider, path), interval)
        self._health.setdefault(provider.name, Health())

    def health(self, provider: str) -> Health | None:
        return self._health.get(provider)

    def sent(self, provider: str) -> None:
        """A request went to ``provider``: count it until the next check reports its load."""
        found = self._health.get(provider)
        if found is not None:
            found.sent += 1

    def failed(self, provider: str, why: str) -> None:
        """A request could not reach it: unhealthy until a check says it is back."""
        found = self._health.get(provider)
        if found is not None and found.healthy:
            found.healthy, found.error = False, why
            log.warning("upstream %s marked unhealthy: %s", provider, why)

    def start(self) -> None:
        if self._watched and self._task is None:
            self._task = asyncio.create_task(self._run(), name="ocak-upstream-health")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        due = dict.fromkeys(self._watched, 0.0)
        while True:
            now = self.clock()
            ready = [name for name, at in due.items() if at <= now]
            await asyncio.gather(*(self.check(name) for name in ready))
            for name in ready:
                due[name] = self.clock() + self._watched[name][2]
            await asyncio.sleep(max(0.05, min(due.values()) - self.clock()))

    async def check(self, name: str) -> Health:
        """One check of ``name`` now."""
        provider, url, interval = self._watched[name]
        state = self._health[name]
        timeout = aiohttp.ClientTimeout(total=max(0.5, min(5.0, interval)))
        try:
            async with provider.session.get(url, timeout=timeout) as response:
                body = await response.json(content_type=None) if response.status == 200 else None
                healthy, error = response.status == 200, f"health answered {response.status}"
        except (TimeoutError, OSError, ValueError, aiohttp.ClientError) as exc:
            healthy, body, error = False, None, f"{type(exc).__name__}: {exc}"
        if healthy != state.healthy:
            log.warning("upstream %s is %s", name, "healthy again" if healthy else error)
        state.healthy, state.error = healthy, None if healthy else error
        state.load, state.sent, state.checked_at = load_of(body), 0, self.clock()
        return state
