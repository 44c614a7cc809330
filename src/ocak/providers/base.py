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
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from ocak.gateway.config import ProviderConfig, Timeouts
from ocak.providers.errors import Secrets, UpstreamBroken

Endpoint = Literal["chat", "completions"]
Locality = Literal["local", "remote"]
LocalityClass = Literal["local", "verify", "remote"]

REQUIRE_LOCALITY = "x-ocak-require-locality"
LOCALITY = "x-ocak-locality"
BACKEND = "x-ocak-backend"

# Loopback traffic never goes through a proxy named in the environment: a proxy
# could carry a local-only request off the machine.
_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
_LIMITS = httpx.Limits(max_connections=512, max_keepalive_connections=128, keepalive_expiry=30)


def make_client() -> httpx.AsyncClient:
    """The one pooled client every provider shares (closed by the app's lifespan)."""
    direct: dict[str, httpx.AsyncBaseTransport] = {
        f"all://{host}": httpx.AsyncHTTPTransport(limits=_LIMITS) for host in _LOOPBACK
    }
    return httpx.AsyncClient(
        limits=_LIMITS,
        timeout=httpx.Timeout(600.0, connect=5.0),
        mounts=direct,
        follow_redirects=False,
    )


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
class UpstreamReply:
    """A whole (non-streaming) answer."""

    raw: bytes
    data: dict[str, Any]
    locality: Locality


@dataclass(slots=True)
class UpstreamStream:
    """A stream whose first chunk has arrived."""

    first: Chunk
    rest: AsyncIterator[Chunk]
    locality: Locality
    on_close: Callable[[], Awaitable[None]] | None = None
    _closed: bool = field(default=False, repr=False)

    async def chunks(self) -> AsyncIterator[Chunk]:
        try:
            yield self.first
            async for chunk in self.rest:
                yield chunk
        finally:
            await self.aclose()

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
        client: Callable[[], httpx.AsyncClient],
        secrets: Secrets,
    ) -> None:
        self.name = name
        self.config = config
        self.url = config.url
        self.key = key
        self._client = client
        self.secrets = secrets

    @property
    def client(self) -> httpx.AsyncClient:
        return self._client()

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

    def timeout(self, timeouts: Timeouts, read: float) -> httpx.Timeout:
        return httpx.Timeout(
            connect=timeouts.connect, read=read, write=timeouts.connect, pool=timeouts.connect
        )
