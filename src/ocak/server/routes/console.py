"""The web console: three static files (``server/console/``) served by ``ocak serve``.

No build step and no Node: the page is plain HTML, CSS and a JavaScript module written
to run as it is, committed as it is served. It reads everything through ocak's own API
with the key the user logs in with (kept in the tab's ``sessionStorage``, sent as a
bearer header, never a cookie, so no request can be forged from another site), and
obeys the same scopes. Its responses carry a strict Content-Security-Policy (scripts,
styles and connections from this origin only; no inline script, no frames) and are not
cached, so an upgrade of ocak never runs an old page against a new API.
"""

from __future__ import annotations

import functools
from importlib.resources import files

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ocak.errors import NotFound

router = APIRouter(tags=["console"], include_in_schema=False)

ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
# Readable without a key (the page asks for one before it reads anything): the root that
# serves it to browsers, and its files.
PATHS = frozenset({"/", "/console/", *(f"/console/{name}" for name in ASSETS)})
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data: blob:; media-src 'self' blob:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def asset(name: str) -> Response:
    """One of the console's files, with its security headers."""
    if name not in ASSETS:
        raise NotFound(f"The console has no file '{name[:100]}'.")
    return Response(_read(name), media_type=ASSETS[name], headers=HEADERS)


@functools.cache
def _read(name: str) -> bytes:
    """A file's bytes, read once per process (they are the installed package's)."""
    return files("ocak.server").joinpath("console", name).read_bytes()


def wants_console(request: Request) -> bool:
    """A browser opening the server's root (it asks for HTML), not a tool probing it."""
    return "text/html" in request.headers.get("accept", "")


@router.get("/console/")
async def console_index() -> Response:
    return asset("index.html")


@router.get("/console/{name}")
async def console_file(name: str) -> Response:
    return asset(name)
