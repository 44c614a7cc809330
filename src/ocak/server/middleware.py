"""Pure ASGI middleware (no BaseHTTPMiddleware: it would buffer streams)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ocak.errors import PayloadTooLarge
from ocak.server.errors import error_response

_JSON = b"application/json"


class AssumeJson:
    """Treat POST bodies as JSON whatever their Content-Type says.

    ``curl -d '{...}'`` sends ``application/x-www-form-urlencoded``; OpenAI's API
    and llama.cpp's server read such bodies as JSON, and so does ocak.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            original = next((v for k, v in scope["headers"] if k == b"content-type"), b"")
            if not original.startswith(_JSON) and not original.startswith(b"multipart/"):
                scope = dict(scope, headers=[*headers, (b"content-type", _JSON)])
        await self.app(scope, receive, send)


class BodyLimit:
    """413 for request bodies over ``max_bytes``, before the app reads them.

    A declared ``Content-Length`` is checked up front (the body is never read);
    a chunked body is read here up to the limit and replayed to the app. Paths in
    ``per_path`` (audio uploads), and those whose end is in ``per_suffix`` (a knowledge
    base's documents), have limits of their own.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        per_path: dict[str, int] | None = None,
        per_suffix: dict[str, int] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = per_path or {}
        self.per_suffix = per_suffix or {}

    def limit(self, path: str) -> int:
        if path in self.per_path:
            return self.per_path[path]
        for suffix, limit in self.per_suffix.items():
            if path.endswith(suffix):
                return limit
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope["path"])
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None:
            if length.isdigit() and int(length) <= limit:
                await self.app(scope, receive, send)
            else:
                await self._refuse(scope, receive, send, limit)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._refuse(scope, receive, send, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        exc = PayloadTooLarge(
            f"The request body is larger than this server accepts ({limit} bytes).",
        )
        record = scope.get("state", {}).get("record")
        if record is not None:
            record.fail(exc.status, exc.code)
        response = error_response(exc, scope["path"])
        response.headers["Connection"] = "close"
        await response(scope, receive, send)
