"""Pure ASGI middleware (no BaseHTTPMiddleware: it would buffer streams)."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

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
