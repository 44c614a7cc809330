"""The one error hierarchy of ocak.

Errors are raised, never returned. Each carries what the edges need to render
it: an HTTP status, an OpenAI error ``type`` and ``code``, the offending
``param``. The HTTP layer turns them into ``{"error": {...}}`` bodies, the gRPC
layer into status codes, the CLI into one-line messages.

    OcakError                       500 server_error
    ├── InvalidRequest              400 invalid_request_error (param names the field)
    │   ├── ContextLengthExceeded   400 context_length_exceeded
    │   └── UnsupportedParameter    400 unsupported_parameter
    ├── PayloadTooLarge             413
    ├── AuthenticationError         401
    ├── PermissionDenied            403
    ├── NotFound                    404
    │   └── ModelNotFound           404 model_not_found
    ├── RateLimited                 429 (retry_after seconds)
    │   ├── QueueFull               429 queue_full
    │   └── QuotaExceeded           429 insufficient_quota (a key's token budget)
    ├── Unavailable                 503 (loading, queue timeout, shutting down)
    ├── UpstreamError               502 (a remote provider failed)
    └── EngineError                 500 (the local engine failed)

Foreign errors (llama.cpp, httpx, ...) are translated where they enter.
"""

from __future__ import annotations


class OcakError(Exception):
    """Base of every error ocak raises on purpose."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, object]:
        """The OpenAI-shaped error body."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(OcakError):
    status = 400
    type = "invalid_request_error"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"

    def __init__(self, *, prompt_tokens: int, max_tokens: int, context: int) -> None:
        super().__init__(
            f"This model's maximum context length is {context} tokens. However, you requested "
            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, "
            f"{max_tokens} in the completion). Please reduce the length of the messages "
            "or completion.",
            param="messages",
        )
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.context = context


class UnsupportedParameter(InvalidRequest):
    code = "unsupported_parameter"

    def __init__(self, param: str, why: str = "") -> None:
        detail = f": {why}" if why else ""
        super().__init__(f"Parameter '{param}' is not supported by ocak yet{detail}.", param=param)


class PayloadTooLarge(OcakError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class UnsupportedMediaType(OcakError):
    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class AuthenticationError(OcakError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDenied(OcakError):
    status = 403
    type = "invalid_request_error"
    code = "permission_denied"


class NotFound(OcakError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, model: str, message: str | None = None) -> None:
        super().__init__(message or f"The model '{model}' does not exist.", param="model")
        self.model = model


class Conflict(OcakError):
    """The request contradicts the state of what it names (a finished job cancelled)."""

    status = 409
    type = "invalid_request_error"
    code = "conflict"


class RateLimited(OcakError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class QueueFull(RateLimited):
    code = "queue_full"


class QuotaExceeded(RateLimited):
    type = "insufficient_quota"
    code = "insufficient_quota"


class Unavailable(OcakError):
    status = 503
    type = "server_error"
    code = "unavailable"


class UpstreamError(OcakError):
    status = 502
    type = "server_error"
    code = "upstream_error"


class EngineError(OcakError):
    status = 500
    type = "server_error"
    code = "engine_error"
