"""Each API's own error body, chosen by the request's path.

ocak raises one ``OcakError`` tree; an error reaches a client in the shape its
library parses: OpenAI's ``{"error": {...}}`` by default, Ollama's
``{"error": "text"}`` under ``/api/``, KoboldCpp's ``{"detail": {...}}`` under
``/api/v1/`` and ``/api/extra/``, llama-server's ``{"error": {"code", "message",
"type"}}`` on its native routes, Anthropic's ``{"type": "error", "error": {...}}``
under ``/v1/messages``. Status codes and ``Retry-After`` are the same everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ocak.errors import OcakError

ErrorBody = Callable[[OcakError], dict[str, Any]]


def openai_error(exc: OcakError) -> dict[str, Any]:
    return exc.to_dict()


def ollama_error(exc: OcakError) -> dict[str, Any]:
    """Ollama's clients raise ``ResponseError(body["error"])``."""
    return {"error": exc.message}


def kobold_error(exc: OcakError) -> dict[str, Any]:
    """KoboldCpp answers ``{"detail": {"msg", "type"}}`` (FastAPI's shape, from KoboldAI)."""
    detail: dict[str, Any] = {"msg": exc.message, "type": exc.code or exc.type}
    if exc.param:
        detail["param"] = exc.param
    return {"detail": detail}


def llamacpp_error(exc: OcakError) -> dict[str, Any]:
    """llama-server's ``{"error": {"code": <status>, "message", "type"}}``."""
    return {"error": {"code": exc.status, "message": exc.message, "type": exc.type}}


_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def anthropic_error(exc: OcakError) -> dict[str, Any]:
    """Anthropic's ``{"type": "error", "error": {"type", "message"}}``; its SDK picks the
    exception class from the status."""
    fallback = "api_error" if exc.status >= 500 else "invalid_request_error"
    kind = _ANTHROPIC_TYPES.get(exc.status, fallback)
    return {"type": "error", "error": {"type": kind, "message": exc.message}}


# Longest prefix first: KoboldCpp's routes sit under Ollama's /api/.
_BY_PREFIX: tuple[tuple[str, ErrorBody], ...] = (
    ("/api/v1/", kobold_error),
    ("/api/extra/", kobold_error),
    ("/api/", ollama_error),
    ("/v1/messages", anthropic_error),
    ("/completion", llamacpp_error),
    ("/tokenize", llamacpp_error),
    ("/detokenize", llamacpp_error),
    ("/props", llamacpp_error),
)


def _under(route: str, path: str) -> tuple[str, ...]:
    return (path,) if path.startswith(route + "/") else ()


def error_body_for(path: str | None) -> ErrorBody:
    """The error shape of the API that serves ``path``."""
    if path:
        for prefix, body in _BY_PREFIX:
            prefix_only = prefix.endswith("/")
            if path.startswith(prefix) if prefix_only else path in (prefix, *_under(prefix, path)):
                return body
    return openai_error
