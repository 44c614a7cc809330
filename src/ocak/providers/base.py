"""The provider interface, what a call to one returns, and the shared HTTP client.

A provider turns an OpenAI-shaped request body into a call to its API and
answers in OpenAI's shape: a whole reply, or a stream already *primed* (its
first chunk has arrived, so a failure before it can still fall back to another
target). Chunks keep the upstream's own JSON bytes, so fields ocak does not
know reach the client unchanged. Every failure is an ``OcakError``.
"""

from __future__ import annotations

import abc
import ipaddress
import json
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp

from ocak.config.gateway import ProviderConfig, Timeouts
from ocak.providers.errors import Secrets, UpstreamBroken

Endpoint = Literal["chat", "completions"]
Locality = Literal["local", "remote"]
LocalityClass = Literal["local", "verify", "remote"]

REQUIRE_LOCALITY = "x-ocak-require-locality"
SESSION = "x-ocak-session"  # the conversation a request belongs to (replica affinity)
LOCALITY = "x-ocak-locality"
BACKEND = "x-ocak-backend"

_POOL = 512  # connections per session


class Http:
    """The providers' shared HTTP client: pooled aiohttp sessions, made in the running loop.

    aiohttp rather than httpx: measured here, an httpx call cost 1.2-1.5 ms of CPU and an
    aiohttp call about 0.45 ms, against a 2 ms budget for all of ocak's added latency.
    Loopback upstreams get a pool of their own and never a proxy (``Provider.proxy``).
    """

    def __init__(self) -> None:
        self._sessions: dict[bool, aiohttp.ClientSession] = {}

    def session(self, loopback: bool) -> aiohttp.ClientSession:
        """The session for loopback upstreams or for the others (separate pools)."""
        session = self._sessions.get(loopback)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(limit=_POOL, keepalive_timeout=30, ttl_dns_cache=300)
            session = aiohttp.ClientSession(
                connector=connector,
                # Proxies are looked up once per provider (``env_proxy``): aiohttp's
                # trust_env reads the environment on every request, doubling its CPU here.
                trust_env=False,
                # An upstream's cookies are not shared between ocak's clients.
                cookie_jar=aiohttp.DummyCookieJar(),
                raise_for_status=False,
            )
            self._sessions[loopback] = session
        return session

    async def aclose(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()


def env_proxy(url: str) -> str | None:
    """The proxy the environment names for ``url`` (HTTPS_PROXY, ALL_PROXY, NO_PROXY...)."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    if not proxies or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxies.get(parts.scheme) or proxies.get("all")


def is_loopback_url(url: str) -> bool:
    host = (urlsplit(url).hostname or "").strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(slots=True)
class Call:
    """One attempt at one target: the body (OpenAI's shape, params applied) and how to send it."""

    payload: dict[str, Any]
    endpoint: Endpoint
    stream: bool
    timeouts: Timeouts
    local_only: bool = False


@dataclass(slots=True)
class Chunk:
    """One streamed chunk: the upstream's JSON bytes (keys scrubbed) and their parse."""

    raw: bytes
    data: dict[str, Any]


@dataclass(slots=True)
class Batch:
    """The chunks one read from the upstream completed; ``last``: the stream ended there."""

    chunks: list[Chunk]
    last: bool = False


@dataclass(slots=True)
class UpstreamReply:
    """A whole (non-streaming) answer."""

    raw: bytes
    data: dict[str, Any]
    locality: Locality


@dataclass(slots=True)
class UpstreamStream:
    """A stream whose first chunk has arrived, read in batches (what arrived together)."""

    first: Batch
    rest: AsyncIterator[Batch]
    locality: Locality
    on_close: Callable[[], Awaitable[None]] | None = None
    _closed: bool = field(default=False, repr=False)

    async def batches(self) -> AsyncIterator[Batch]:
        try:
            yield self.first
            if not self.first.last:
                async for batch in self.rest:
                    yield batch
                    if batch.last:
                        break
        finally:
            await self.aclose()

    async def chunks(self) -> AsyncIterator[Chunk]:
        async for batch in self.batches():
            for chunk in batch.chunks:
                yield chunk

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        close = getattr(self.rest, "aclose", None)
        if close is not None:
            await close()
        if self.on_close is not None:
            await self.on_close()


Upstream = UpstreamReply | UpstreamStream


def parse_json(provider: str, raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError:
        raise UpstreamBroken(
            f"provider '{provider}' answered with something other than JSON"
        ) from None
    if not isinstance(data, dict):
        raise UpstreamBroken(f"provider '{provider}' answered with JSON that is not an object")
    return data


class Provider(abc.ABC):
    """One configured upstream API."""

    def __init__(
        self,
        name: str,
        config: ProviderConfig,
        *,
        key: str | None,
        http: Http,
        secrets: Secrets,
    ) -> None:
        self.name = name
        self.config = config
        self.url = config.url
        self.key = key
        self.http = http
        self.secrets = secrets
        self.loopback = is_loopback_url(self.url)
        # Never a proxy for loopback: it could carry a local-only request off the machine.
        self.proxy = None if self.loopback else env_proxy(self.url)

    @property
    def session(self) -> aiohttp.ClientSession:
        return self.http.session(self.loopback)

    @property
    def locality(self) -> LocalityClass:
        """local: vouched for by the operator; verify: may prove it is local; remote."""
        return "local" if self.config.local else "remote"

    def unsupported(self, call: Call) -> str | None:
        """Why this provider cannot take ``call`` at all (then the router skips it)."""
        return None

    @abc.abstractmethod
    async def send(self, model: str, call: Call) -> Upstream:
        """Send the call; a stream comes back primed. Raises ``OcakError`` on any failure."""

    async def verify_local(self, model: str, timeouts: Timeouts) -> bool:
        """Whether this upstream proves that ``model`` runs on this machine."""
        return self.locality == "local"

    def timeout(self, timeouts: Timeouts, read: float) -> aiohttp.ClientTimeout:
        """Connect and read-inactivity limits (the callers bound the whole with asyncio)."""
        return aiohttp.ClientTimeout(
            total=None, connect=timeouts.connect, sock_connect=timeouts.connect, sock_read=read
        )
