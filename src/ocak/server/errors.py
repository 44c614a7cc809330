"""Map every error to a JSON body in its API's shape (``shapes``); nothing leaks a stack
trace."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ocak.errors import InvalidRequest, OcakError
from ocak.server.shapes import error_body_for
from ocak.server.streaming import ClientDisconnected

log = logging.getLogger("ocak.server")


def error_response(exc: OcakError, path: str | None = None) -> JSONResponse:
    """``exc`` as the response of the API that serves ``path`` (OpenAI's shape without)."""
    headers: dict[str, str] = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    body = error_body_for(path)(exc)
    return JSONResponse(body, status_code=exc.status, headers=headers)


def param_path(loc: tuple[Any, ...] | list[Any]) -> str | None:
    """``("body", "messages", 0, "role")`` -> ``messages.[0].role`` (OpenAI's spelling)."""
    parts = [p for p in loc if p != "body"]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f".[{p}]"
        else:
            out += f".{p}" if out else str(p)
    return out or None


def validation_error(
    exc: RequestValidationError | ValidationError, param_prefix: str = ""
) -> InvalidRequest:
    """A body that does not validate, as a 400 naming its first bad field (``param_prefix``
    spells a translated body's field the way the client's own API does)."""
    errors = exc.errors()
    first: dict[str, Any] = dict(errors[0]) if errors else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        return InvalidRequest(
            "We could not parse the JSON body of your request. The body must be valid JSON "
            f"({(first.get('ctx') or {}).get('error', 'invalid JSON')})."
        )
    loc = tuple(first.get("loc", ()))
    # pydantic adds the union member's type name to the location; drop it.
    loc = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p in _TYPE_NAMES)))
    param = param_path(loc)
    if param is not None:
        param = param_prefix + param
    msg = str(first.get("msg", "invalid value"))
    if param is None:
        text = f"Invalid request body: {msg}."
    else:
        text = f"Invalid value for '{param}': {msg}."
    if len(errors) > 1:
        text += f" ({len(errors) - 1} more problem(s) in this request.)"
    return InvalidRequest(text, param=param)


_TYPE_NAMES = {"str", "int", "float", "bool", "list", "dict", "function-after", "function-before"}


def _mark(request: Request, exc: OcakError) -> None:
    record = getattr(request.state, "record", None)
    if record is not None:
        record.fail(exc.status, exc.code)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into ``{"error": {...}}``."""

    @app.exception_handler(OcakError)
    async def _ocak(request: Request, exc: OcakError) -> JSONResponse:
        if exc.status >= 500:
            log.warning("request failed: %s", exc.message)
        _mark(request, exc)
        return error_response(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = validation_error(exc)
        _mark(request, err)
        return error_response(err, request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        err = OcakError(str(exc.detail), code=None)
        err.status = exc.status_code
        err.type = "invalid_request_error" if exc.status_code < 500 else "server_error"
        if exc.status_code == 404:
            err.message = "Not found. See /docs for the API."
            err.code = "not_found"
        elif exc.status_code == 405:
            err.code = "method_not_allowed"
        return error_response(err, request.url.path)

    @app.exception_handler(ClientDisconnected)
    async def _gone(request: Request, exc: ClientDisconnected) -> Response:
        # The client left before its answer: a cancellation, not a server error. Nobody
        # reads this response; 499 is the conventional "client closed request".
        record = getattr(request.state, "record", None)
        if record is not None and record.status == "completed":
            record.status = "cancelled"
        return Response(status_code=499)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        err = OcakError("The server had an internal error. See its log.")
        _mark(request, err)
        return error_response(err, request.url.path)
