"""Choose a target for a public model name, and try the next one when a target fails.

For each request the router orders an alias's targets: by rank, and inside a
rank (replicas) in a weighted random order; it leaves out targets whose
circuit breaker is open and, for a local-only request, every target that cannot
prove it runs on this machine. It then calls ``attempt(target)`` on each in
turn. A failure that another try may cure (connection error, timeout, 5xx, 429:
``falls_back``) is retried on the same target with exponential backoff and
jitter, honouring ``Retry-After``, then handed to the next target; any other
error is the answer. ``attempt`` returns once the target's first chunk has
arrived, so nothing has reached the client while the router still chooses. When the
request is traced, each call of ``attempt`` is a span (``attempt {target}``) with its
target, provider, outcome and error type.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from ocak import telemetry
from ocak.config.gateway import RoutingConfig, Timeouts
from ocak.engines.registry import EngineRegistry
from ocak.errors import InvalidRequest, ModelNotFound, OcakError, Unavailable
from ocak.gateway.adapters import merge, split_name
from ocak.gateway.health import Health, HealthMonitor
from ocak.protocol.generation import Adapter
from ocak.providers.base import Locality, LocalityClass, Provider
from ocak.providers.errors import (
    LocalityRefused,
    TargetCannot,
    UpstreamTimeout,
    UpstreamUnreachable,
    falls_back,
)
from ocak.telemetry import genai

log = logging.getLogger("ocak.gateway")

T = TypeVar("T")
Clock = Callable[[], float]


class Breaker:
    """Closed until ``threshold`` failures in a row; then open for ``cooldown`` seconds;
    then half-open: one probe request, whose outcome closes or reopens it."""

    def __init__(self, threshold: int, cooldown: float, clock: Clock = time.monotonic) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.clock = clock
        self.failures = 0
        self.open_until = 0.0
        self.probing = False

    @property
    def state(self) -> str:
        if self.failures < self.threshold:
            return "closed"
        return "open" if self.clock() < self.open_until or self.probing else "half-open"

    def allow(self) -> bool:
        """Whether a request may go to the target now (claims the probe when half-open)."""
        if self.failures < self.threshold:
            return True
        if self.probing or self.clock() < self.open_until:
            return False
        self.probing = True
        return True

    def success(self) -> None:
        self.failures, self.probing = 0, False

    def failure(self) -> None:
        self.failures += 1
        self.probing = False
        if self.failures >= self.threshold:
            self.open_until = self.clock() + self.cooldown

    def release(self) -> None:
        """The probe ended without a verdict (the client left): let another probe go."""
        self.probing = False

    @property
    def retry_in(self) -> float:
        return max(0.0, self.open_until - self.clock())


def backoff(
    attempt: int,
    retry_after: float | None,
    routing: RoutingConfig,
    rng: random.Random,
) -> float | None:
    """Seconds before retry number ``attempt + 1``; None when the upstream asks for a wait
    longer than ``retry_after_max`` (better to try the next target)."""
    if retry_after is not None:
        if retry_after > routing.retry_after_max:
            return None
        return retry_after
    ceiling = min(routing.backoff_max, routing.backoff * 2.0**attempt)
    return ceiling / 2 + rng.uniform(0, ceiling / 2)  # "equal jitter": never zero


@dataclass(eq=False, kw_only=True)
class _Target:
    """What every target has: its name, place in the order, params, timeouts and retries."""

    name: str  # what x-ocak-backend says: "local/default", "groq/llama-3.3-70b-versatile"
    rank: int = 0
    weight: float = 1.0
    params: dict[str, Any] = field(default_factory=dict)  # for fields the client did not set
    timeouts: Timeouts = field(default_factory=Timeouts)
    retries: int = 0
    breaker: Breaker | None = None


@dataclass(eq=False, kw_only=True)
class LocalTarget(_Target):
    """A local engine, by its model id, with the LoRA adapters its name carries."""

    engine: str
    adapters: tuple[Adapter, ...] = ()

    @property
    def locality(self) -> LocalityClass:
        return "local"


@dataclass(eq=False, kw_only=True)
class RemoteTarget(_Target):
    """A provider's model; local only when the provider says or proves so."""

    provider: Provider
    model: str

    @property
    def locality(self) -> LocalityClass:
        return self.provider.locality


Target = LocalTarget | RemoteTarget


@dataclass(eq=False)
class Alias:
    name: str
    targets: list[Target]
    locality: str | None = None
    skipped: list[str] = field(default_factory=list)  # targets left out at start (no key)
    direct: bool = False  # a local engine id used as a model name
    knowledge: list[str] = field(default_factory=list)  # bases retrieved into its chats
    balance: str = "random"  # among one rank's targets: "random" (weighted) or "least-busy"
    affinity: str | None = None  # "session": one session's requests to one replica

    def can_be_local(self) -> bool:
        return any(t.locality == "local" for t in self.targets)


@dataclass(slots=True)
class Served(Generic[T]):
    target: Target
    result: T
    locality: Locality


Attempt = Callable[[Target], Awaitable[tuple[T, Locality]]]


def with_adapters(alias: Alias, adapters: tuple[Adapter, ...], name: str) -> Alias:
    """``alias``'s local targets with ``adapters`` added (made per request, never kept:
    clients choose the scales). Remote targets cannot apply a local adapter."""
    local = [
        replace(t, adapters=merge(t.adapters, adapters))
        for t in alias.targets
        if isinstance(t, LocalTarget)
    ]
    if not local:
        raise InvalidRequest(
            f"'{name}': LoRA adapters apply to this machine's llama.cpp models, and "
            f"'{alias.name}' has no local target.",
            param="model",
        )
    return Alias(name, list[Target](local), locality=alias.locality, knowledge=alias.knowledge,
                 balance=alias.balance, affinity=alias.affinity)  # fmt: skip


class Router:
    """Aliases and the local engines, and the fallback loop over their targets."""

    def __init__(
        self,
        aliases: dict[str, Alias],
        engines: EngineRegistry,
        routing: RoutingConfig | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.aliases = aliases
        self.engines = engines
        self.routing = routing or RoutingConfig()
        self.rng = rng or random.Random()
        self.health = HealthMonitor()
        self._direct: dict[str, Alias] = {}

    def knows(self, name: str) -> bool:
        """An alias, local model or stored adapter (metrics label only these: a name with
        adapters and scales, ``BASE@A:0.37``, is the client's to vary)."""
        return (
            name in self.aliases or name in self.engines or self.engines.adapter(name) is not None
        )

    def resolve(self, name: str) -> Alias:
        """The alias, a local engine id as a one-target alias, or either with LoRA adapters
        (``BASE@ADAPTER:SCALE``, or a stored adapter's own name); 404 otherwise."""
        plain = self._plain(name)
        if plain is not None:
            return plain
        base, adapters = split_name(name)
        if adapters:
            return with_adapters(self.resolve(base), adapters, name)
        stored = self.engines.adapter(name)
        if stored is None:
            raise ModelNotFound(name)
        if stored.base is None:
            raise ModelNotFound(
                name,
                f"'{name}' is a LoRA adapter whose manifest names no base model: "
                f"ask for BASE@{name}.",
            )
        found = self._plain(stored.base)
        if found is None:
            raise ModelNotFound(
                name, f"The base model '{stored.base}' of the adapter '{name}' does not exist."
            )
        return with_adapters(found, (Adapter(stored.name),), name)

    def _plain(self, name: str) -> Alias | None:
        """An alias, or a local engine id as a one-target alias."""
        alias = self.aliases.get(name)
        if alias is not None:
            return alias
        if name not in self.engines:
            return None
        alias = self._direct.get(name)
        if alias is None:
            target = LocalTarget(name=f"local/{name}", engine=name)
            alias = self._direct[name] = Alias(name, [target], direct=True)
        return alias

    def describe(self, target: Target) -> tuple[str, str]:
        """The target's ``gen_ai.provider.name`` (a local engine's kind, a provider's preset
        or type) and the model it is asked for (the engine id, the provider's model)."""
        if isinstance(target, LocalTarget):
            engine = self.engines.find(target.engine)
            return (engine.kind if engine is not None else "ocak"), target.engine
        config = target.provider.config
        return config.preset or config.type, target.model

    def order(self, alias: Alias, session: str | None = None) -> list[Target]:
        """Targets by rank, those whose health check fails after every other; replicas
        (equal rank) in a weighted random order, or least busy first (``balance``), or,
        for a session (``affinity``), the session's own replica first: rendezvous hashing
        of the session and the targets' names, so a replica's loss moves only its own
        sessions."""
        if len(alias.targets) == 1:
            return list(alias.targets)
        keyed = []
        for i, t in enumerate(alias.targets):
            health = self._health(t)
            down = health is not None and not health.healthy
            if session is not None and alias.affinity == "session":
                spread = -_rendezvous(session, t.name, t.weight)
            elif alias.balance == "least-busy":
                spread = (health.busy if health is not None else 0) / t.weight + self.rng.random()
            else:
                spread = -(self.rng.random() ** (1.0 / t.weight))
            keyed.append((down, t.rank, spread, i, t))
        return [t for *_, t in sorted(keyed, key=lambda k: (k[0], k[1], k[2], k[3]))]

    def _health(self, target: Target) -> Health | None:
        if isinstance(target, RemoteTarget):
            return self.health.health(target.provider.name)
        return None

    async def run(
        self,
        name: str,
        attempt: Attempt[T],
        *,
        local_only: bool = False,
        session: str | None = None,
    ) -> Served[T]:
        """Serve ``name`` with the first target that answers; raise the last failure.
        ``session``: the conversation the request belongs to (alias affinity)."""
        alias = self.resolve(name)
        if not alias.targets:
            raise Unavailable(
                f"'{name}' has no target available: {', '.join(alias.skipped)} left out at "
                "start for want of an API key in the environment.",
            )
        local_only = local_only or alias.locality == "local"
        candidates = self.order(alias, session)
        if local_only:
            candidates = [t for t in candidates if t.locality != "remote"]
            if not candidates:
                raise LocalityRefused(
                    f"'{name}' has no target on this machine, and this request may only be "
                    "served locally (an API key or alias with locality: local, or "
                    "x-ocak-require-locality). Nothing was sent off the machine.",
                    param="model",
                )
        last: OcakError | None = None
        cannot: TargetCannot | None = None
        cooling: list[Target] = []
        unverified: list[Target] = []
        for target in candidates:
            breaker = target.breaker
            if breaker is not None and not breaker.allow():
                cooling.append(target)
                continue
            if (
                isinstance(target, RemoteTarget)
                and local_only
                and target.locality == "verify"
                and not await target.provider.verify_local(target.model, target.timeouts)
            ):
                if breaker is not None:
                    breaker.release()
                unverified.append(target)
                log.warning(
                    "%s did not prove it is local; skipped for a local-only request", target.name
                )
                continue
            served, failure = await self._try(target, attempt, alias)
            if served is not None:
                return served
            if isinstance(failure, TargetCannot):
                cannot = failure
            else:
                last = failure
        if last is not None:
            raise last
        if cannot is not None:
            raise cannot
        if unverified:
            raise LocalityRefused(
                f"no target of '{name}' could prove it runs on this machine "
                f"({', '.join(t.name for t in unverified)}); nothing was sent off the machine.",
                param="model",
            )
        wait = min(t.breaker.retry_in for t in cooling if t.breaker is not None)
        raise Unavailable(
            f"every target of '{name}' failed recently and is cooling down "
            f"({', '.join(t.name for t in cooling)}); try again in {wait:.0f}s.",
            retry_after=max(1.0, wait),
        )

    async def _try(
        self, target: Target, attempt: Attempt[T], alias: Alias
    ) -> tuple[Served[T] | None, OcakError | None]:
        """One target, with its retries: (served, None) or (None, the last failure)."""
        breaker = target.breaker
        failure: OcakError | None = None
        provider = target.provider.name if isinstance(target, RemoteTarget) else None
        for n in range(1 + target.retries):
            if provider is not None:
                self.health.sent(provider)
            try:
                result, locality = await self._attempt(target, attempt, n)
            except TargetCannot as exc:  # not a failure of the target: try the next one
                if breaker is not None:
                    breaker.release()
                return None, exc
            except OcakError as exc:
                if not falls_back(exc):
                    if breaker is not None:
                        breaker.success()  # it answered: the target is up
                    raise
                failure = exc
                log.warning("%s failed for '%s': %s", target.name, alias.name, exc.message)
                if provider is not None and isinstance(exc, UpstreamUnreachable):
                    self.health.failed(provider, exc.message)  # until a check sees it back
                if n == target.retries or isinstance(exc, UpstreamTimeout):
                    break  # a timeout is not retried on the same target
                delay = backoff(n, exc.retry_after, self.routing, self.rng)
                if delay is None:
                    break
                await asyncio.sleep(delay)
                continue
            except BaseException:
                if breaker is not None:
                    breaker.release()
                raise
            if breaker is not None:
                breaker.success()
            return Served(target, result, locality), None
        if breaker is not None:  # one failed request (its retries included) counts once
            breaker.failure()
        return None, failure

    async def _attempt(self, target: Target, attempt: Attempt[T], n: int) -> tuple[T, Locality]:
        """One call of ``attempt``; a span of its own when the request is traced."""
        if telemetry.current() is None:
            return await attempt(target)
        provider, model = self.describe(target)
        attributes: dict[str, Any] = {
            genai.PROVIDER: provider,
            genai.REQUEST_MODEL: model,
            genai.TARGET: target.name,
        }
        if n:
            attributes["ocak.retry"] = n
        remote = isinstance(target, RemoteTarget)
        kind = telemetry.SpanKind.CLIENT if remote else telemetry.SpanKind.INTERNAL
        span = telemetry.start(f"attempt {target.name}", attributes, kind=kind)
        try:
            with telemetry.active(span):
                result, locality = await attempt(target)
        except TargetCannot:
            telemetry.finish(
                span, {genai.OUTCOME: "skipped"}
            )  # not a failure: the next target serves
            raise
        except BaseException as exc:
            failing = isinstance(exc, OcakError) and falls_back(exc)
            cancelled = isinstance(exc, asyncio.CancelledError)
            outcome = "failed" if failing else "cancelled" if cancelled else "error"
            telemetry.finish(span, {genai.OUTCOME: outcome}, error=exc)
            raise
        telemetry.finish(span, {genai.OUTCOME: "served", genai.LOCALITY: locality})
        return result, locality


def _rendezvous(session: str, target: str, weight: float) -> float:
    """The target's score for the session (highest wins), weighted as Skeen's rendezvous
    hashing weighs: -weight / ln(u), u uniform in (0, 1) from the pair's hash."""
    digest = hashlib.blake2b(f"{session}\0{target}".encode(), digest_size=8).digest()
    u = (int.from_bytes(digest, "big") + 1) / (2**64 + 2)
    return -weight / math.log(u)
