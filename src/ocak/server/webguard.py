"""Safe from the web pages the player visits: Host and Origin checks, CORS, body types.

ocak's default is a keyless server on loopback, on a PC whose owner browses the
web. Any page can send it a "simple" request (a ``text/plain`` POST needs no
preflight), and with DNS rebinding (a hostile name resolving to 127.0.0.1) read
the answer too; Ollama shipped exactly that (CVE-2024-28224). So, before
anything else runs, for HTTP and WebSocket alike:

- **Host**: a loopback name or address, a configured ``allowed_hosts`` name, or,
  when listening beyond loopback, any IP literal (rebinding needs a DNS name).
- **Origin** (sent by browsers only): ``null`` is refused; an origin is allowed
  when it is the server's own (``Host`` equal: the console), a loopback origin on
  any port, or matches ``allowed_origins``. Everything else is 403.
- **CORS** for allowed origins: preflights answered, ``Access-Control-Allow-Origin``
  on responses. Bearer keys, not cookies, so credentials are never allowed.
- **Body types from a browser**: JSON, multipart and the binary types audio and
  card imports use; a ``text/plain`` or form body with an ``Origin`` is 415.
  Requests without an ``Origin`` (curl, SDKs, games) are untouched, curl's form
  content type included.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ocak.errors import OcakError, PermissionDenied, UnsupportedMediaType
from ocak.protocol.record import RequestRecord
from ocak.server.auth import is_loopback
from ocak.server.errors import error_response

BROWSER_BODY_TYPES = (
    "application/json",
    "multipart/form-data",
    "application/octet-stream",
    "audio/",
    "image/png",
    "application/x-yaml",
    "application/yaml",
)
ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
EXPOSE_HEADERS = "x-request-id, x-ocak-backend, x-ocak-locality, x-ocak-model, retry-after"
PREFLIGHT_MAX_AGE = "600"


def _loopback_name(host: str) -> bool:
    """A loopback address or ``localhost``, as the exposure check says, and also the
    ``*.localhost`` names that resolve to loopback by definition (RFC 6761)."""
    host = host.strip("[]").rstrip(".").lower()
    return host.endswith(".localhost") or is_loopback(host)


def _ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def split_host(value: str) -> str:
    """The host part of a ``Host`` header (``[::1]:8000`` -> ``[::1]``, ``a:80`` -> ``a``)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[: value.find("]") + 1] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _matches(value: str, patterns: Iterable[str]) -> bool:
    """``*`` matches anything; otherwise shell-style wildcards (``*.example.com``)."""
    return any(p == "*" or fnmatch.fnmatchcase(value, p.lower()) for p in patterns)


class WebPolicy:
    """Which hosts and origins a server answers, from its settings."""

    def __init__(
        self, *, listen_host: str, allowed_hosts: Iterable[str], allowed_origins: Iterable[str]
    ) -> None:
        self.beyond_loopback = not _loopback_name(listen_host)
        self.hosts = [h.strip().lower() for h in allowed_hosts if h.strip()]
        self.origins = [o.strip().lower().rstrip("/") for o in allowed_origins if o.strip()]

    def host_allowed(self, host_header: str | None) -> bool:
        if not host_header:  # HTTP/1.0 without Host: no browser sends that
            return True
        host = split_host(host_header)
        if _loopback_name(host) or _matches(host, self.hosts):
            return True
        return self.beyond_loopback and _ip_literal(host)

    def origin_allowed(self, origin: str, host_header: str | None) -> bool:
        origin = origin.strip().lower().rstrip("/")
        if origin == "null" or not origin:
            return False
        if _matches(origin, self.origins):
            return True
        parts = urlsplit(origin)
        if not parts.scheme or not parts.netloc:
            return False
        if host_header and parts.netloc == host_header.strip().lower():
            return True  # same origin: the console, served by this server
        return parts.scheme in ("http", "https") and _loopback_name(parts.hostname or "")


class WebGuard:
    """The checks above as pure ASGI middleware (streams pass through unbuffered)."""

    def __init__(self, app: ASGIApp, policy: WebPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host")
        origin = headers.get("origin")
        problem = self._problem(scope, headers, host, origin)
        if problem is not None:
            await self._deny(scope, receive, send, problem)
            return
        if origin is None or scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await self._preflight(headers, origin)(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                raw = list(message.get("headers", []))
                raw += [
                    (b"access-control-allow-origin", origin.encode("latin-1")),
                    (b"access-control-expose-headers", EXPOSE_HEADERS.encode()),
                    (b"vary", b"Origin"),
                ]
                message = {**message, "headers": raw}
            await send(message)

        await self.app(scope, receive, send_with_cors)

    def _problem(
        self, scope: Scope, headers: Headers, host: str | None, origin: str | None
    ) -> OcakError | None:
        if not self.policy.host_allowed(host):
            return PermissionDenied(
                f"This server does not answer for the host name '{split_host(host or '')}' "
                "(a web page may be using DNS rebinding to reach it). Add the name to "
                "allowed_hosts (OCAK_ALLOWED_HOSTS) if it is yours.",
                code="host_not_allowed",
            )
        if origin is None:
            return None
        if not self.policy.origin_allowed(origin, host):
            return PermissionDenied(
                f"Requests from the web origin '{origin}' are not allowed. Add it to "
                "allowed_origins (OCAK_ALLOWED_ORIGINS) to let that site call this server.",
                code="origin_not_allowed",
            )
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH"):
            ctype = headers.get("content-type", "").split(";")[0].strip().lower()
            length = headers.get("content-length")
            empty = length == "0" and not ctype
            if not empty and not ctype.startswith(BROWSER_BODY_TYPES):
                return UnsupportedMediaType(
                    f"A request from a web page must send its body as application/json "
                    f"(or multipart/form-data for uploads), not '{ctype or 'no type'}'.",
                    param="content-type",
                )
        return None

    def _preflight(self, headers: Headers, origin: str) -> Response:
        asked = headers.get("access-control-request-headers", "")
        return Response(
            status_code=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": ALLOW_METHODS,
                "Access-Control-Allow-Headers": asked or "authorization, content-type",
                "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
                "Vary": "Origin",
            },
        )

    async def _deny(self, scope: Scope, receive: Receive, send: Send, exc: OcakError) -> None:
        record: RequestRecord | None = scope.get("state", {}).get("record")
        if record is not None:
            record.fail(exc.status, exc.code)
        if scope["type"] == "websocket":
            # Closing before accepting makes the server answer the upgrade with 403.
            await send({"type": "websocket.close", "code": 1008, "reason": exc.message[:120]})
            return
        await error_response(exc, scope.get("path"))(scope, receive, send)
