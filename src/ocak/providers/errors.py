"""Upstream failures in ocak's error hierarchy, translated where they enter (httpx, HTTP status).

    UpstreamError (502)                 ocak.errors
    ├── UpstreamUnreachable   502       connection refused, reset, DNS
    ├── UpstreamTimeout       504       connect, first-token or total timeout
    ├── UpstreamBroken        502       a stream cut mid-way, a body that is not JSON
    ├── UpstreamRefused       502       the upstream refused ocak itself (401/403/404:
    │                                   its key or model name): no fallback, fix the config
    └── LocalityUnverified    502       a loopback upstream did not prove it is local
    RateLimited (429)
    └── UpstreamRateLimited   429       the upstream's 429, with its Retry-After
    InvalidRequest (400)
    └── UpstreamRejected      400/413   the upstream refused the request itself
    PermissionDenied (403)
    └── LocalityRefused       403       a local-only request with no local target
    InvalidRequest (400)
    └── TargetCannot          400       this target cannot take the request (Replicate and
                                        tools): the router skips it for the next one

Messages never carry an upstream key: ``Secrets.scrub`` runs over every text that
came from an upstream before it is put in an error.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp

from ocak.errors import (
    InvalidRequest,
    OcakError,
    PermissionDenied,
    RateLimited,
    UpstreamError,
)

MASK = "***"
_DETAIL_LIMIT = 500


class UpstreamUnreachable(UpstreamError):
    code = "upstream_unreachable"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class UpstreamBroken(UpstreamError):
    code = "upstream_error"


class UpstreamRefused(UpstreamError):
    code = "upstream_refused"


class LocalityUnverified(UpstreamError):
    code = "locality_unverified"


class UpstreamRateLimited(RateLimited):
    code = "upstream_rate_limited"


class UpstreamRejected(InvalidRequest):
    code = "upstream_rejected"


class LocalityRefused(PermissionDenied):
    code = "locality_local_required"


class TargetCannot(InvalidRequest):
    code = "unsupported_by_target"


def falls_back(exc: OcakError) -> bool:
    """Whether another try (this target again, or the next) may succeed: connection
    errors, timeouts, 5xx and 429; not a refusal of ocak's own key or model name."""
    if isinstance(exc, UpstreamRefused):
        return False
    return exc.status == 429 or exc.status >= 500


class Secrets:
    """The upstream keys this process holds, and the scrubbing of any text that might echo one."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._text: list[str] = []
        self._bytes: list[bytes] = []
        for v in values:
            self.add(v)

    def add(self, value: str) -> None:
        if len(value) >= 4 and value not in self._text:  # shorter is not a credential
            self._text.append(value)
            self._bytes.append(value.encode())

    def scrub(self, text: str) -> str:
        for secret in self._text:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def scrub_bytes(self, data: bytes) -> bytes:
        for secret in self._bytes:
            if secret in data:
                data = data.replace(secret, MASK.encode())
        return data


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _detail(body: bytes) -> tuple[str, dict[str, Any]]:
    """The upstream's error message and OpenAI error fields, from whatever shape it sent."""
    text = body[:4096].decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:_DETAIL_LIMIT], {}
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            return str(err.get("message", ""))[:_DETAIL_LIMIT], err
        if isinstance(err, str):
            return err[:_DETAIL_LIMIT], {}
        for field in ("detail", "message", "title"):  # Replicate: {"title", "detail"}
            if isinstance(data.get(field), str):
                return str(data[field])[:_DETAIL_LIMIT], {}
    return text[:_DETAIL_LIMIT], {}


def from_status(
    provider: str, status: int, body: bytes, headers: Mapping[str, str], secrets: Secrets
) -> OcakError:
    """An upstream's non-2xx answer as an ocak error (its message scrubbed of keys)."""
    message, fields = _detail(body)
    message = secrets.scrub(message) or f"HTTP {status}"
    where = f"provider '{provider}' answered {status}: {message}"
    if status == 429:
        return UpstreamRateLimited(where, retry_after=retry_after(headers))
    if status in (401, 403):
        return UpstreamRefused(
            f"provider '{provider}' refused ocak's credentials ({status}): {message}. "
            "Check the key in its api_key_env variable."
        )
    if status == 404:
        return UpstreamRefused(f"provider '{provider}' does not know the model or path: {message}")
    if status == 408 or status >= 500:
        return UpstreamBroken(where)
    param = fields.get("param")
    code = fields.get("code")
    err = UpstreamRejected(
        f"provider '{provider}' rejected the request: {message}",
        param=param if isinstance(param, str) else None,
        code=code if isinstance(code, str) else None,
    )
    err.status = 413 if status == 413 else 400
    return err


def from_transport(
    provider: str, exc: Exception, secrets: Secrets, *, missed: str = ""
) -> OcakError:
    """A transport failure talking to ``provider`` (aiohttp's errors, OS errors). ``missed``
    says what the caller's own deadline (``asyncio.timeout``, not aiohttp's) waited for."""
    if missed and isinstance(exc, TimeoutError) and not isinstance(exc, aiohttp.ClientError):
        return UpstreamTimeout(f"provider '{provider}' {missed}")
    detail = secrets.scrub(str(exc) or type(exc).__name__)
    if isinstance(exc, TimeoutError):  # aiohttp's connect and read timeouts are TimeoutErrors
        phase = (
            "connecting to" if isinstance(exc, aiohttp.ConnectionTimeoutError) else "waiting for"
        )
        return UpstreamTimeout(f"timed out {phase} provider '{provider}'")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamUnreachable(f"cannot reach provider '{provider}': {detail}")
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
        return UpstreamBroken(f"provider '{provider}' broke off its answer: {detail}")
    return UpstreamBroken(f"talking to provider '{provider}' failed: {detail}")


# What ``from_transport`` translates: catch these where a provider talks to its upstream.
TRANSPORT_ERRORS = (aiohttp.ClientError, OSError)
