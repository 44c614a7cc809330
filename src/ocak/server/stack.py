"""The middleware stack over the app, and the OpenAPI document it makes true.

Middleware, outer to inner: request tracking (app.py: runs the record sinks), the
web guard (Host, Origin, CORS: 403/415), auth (401), body limit (413), content
capture (only with ``log_content`` or ``store_content``), then the app.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from ocak.protocol.openai import ErrorResponse
from ocak.server.auth import OPEN_PATHS, AuthMiddleware
from ocak.server.middleware import BodyLimit
from ocak.server.request_log import ContentCapture
from ocak.server.routes import console
from ocak.server.services import Services
from ocak.server.webguard import WebGuard, WebPolicy


def install(app: FastAPI, state: Services) -> None:
    """Call after the innermost middleware and before request tracking is added."""
    settings = state.settings
    if settings.log_content or settings.store_content:
        app.add_middleware(
            ContentCapture,
            log=settings.log_content,
            store=settings.store_content,
            max_request=settings.max_body_bytes,
        )
    # an audio upload may be up to max_audio_bytes, plus its form's own few bytes
    uploads = {
        "/v1/audio/transcriptions": settings.max_audio_bytes + 64 * 1024,
        "/v1/files": settings.max_tuning_file_bytes + 64 * 1024,  # fine-tuning data
    }
    documents = {"/documents": settings.max_document_bytes + 64 * 1024}  # /v1/knowledge/KB/...
    app.add_middleware(
        BodyLimit, max_bytes=settings.max_body_bytes, per_path=uploads, per_suffix=documents
    )
    open_paths = OPEN_PATHS | console.PATHS | ({"/metrics"} if settings.metrics_public else set())
    app.add_middleware(AuthMiddleware, auth=state.auth, open_paths=frozenset(open_paths))
    # Outer to auth: a hostile page is refused before its key is even looked at, and a
    # CORS preflight (which carries no key) is answered.
    policy = WebPolicy(
        listen_host=settings.host,
        allowed_hosts=settings.allowed_hosts,
        allowed_origins=settings.allowed_origins,
    )
    app.add_middleware(WebGuard, policy=policy)
    document(app, frozenset(open_paths))


def document(app: FastAPI, open_paths: frozenset[str]) -> None:
    """Make the OpenAPI document say what the server does: 400 (never FastAPI's 422) for
    invalid input, and bearer keys on every path but the open ones."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        error = {"$ref": "#/components/schemas/ErrorResponse"}
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                if responses.pop("422", None) is not None:
                    responses.setdefault("400", _error_response("Invalid request", error))
                if path not in open_paths:
                    operation["security"] = [{"bearer": []}, {}]  # {}: when no keys exist
                    responses.setdefault("401", _error_response("Missing or wrong key", error))
        components = schema.setdefault("components", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            components.get("schemas", {}).pop(unused, None)
        components.setdefault("schemas", {}).setdefault("ErrorResponse", _ERROR_SCHEMA)
        components.setdefault("schemas", {}).setdefault("ErrorDetail", _DETAIL_SCHEMA)
        components["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "ocak API key"}
        }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _error_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERROR_SCHEMA = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
_DETAIL_SCHEMA = _ERROR_SCHEMA.pop("$defs", {}).get("ErrorDetail", {})
