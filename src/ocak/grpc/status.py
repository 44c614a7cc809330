"""ocak's errors as gRPC status codes, with the details in trailing metadata.

The status code carries the class of failure; trailing metadata carries what the
OpenAI-shaped HTTP body would: ``ocak-error-code`` (``context_length_exceeded``,
``model_not_found``, ...), ``ocak-error-param``, ``retry-after`` (seconds), and
for a context overflow its numbers (``ocak-prompt-tokens``, ``ocak-max-tokens``,
``ocak-context-length``), which the message states as well.
"""

from __future__ import annotations

import math

import grpc

from ocak.errors import (
    AuthenticationError,
    ContextLengthExceeded,
    InvalidRequest,
    NotFound,
    OcakError,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    Unavailable,
    UpstreamError,
)

Trailers = tuple[tuple[str, str], ...]

# Most specific first is not needed: the error's own class and then its bases are looked up.
CODES: dict[type[OcakError], grpc.StatusCode] = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    PayloadTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    AuthenticationError: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    NotFound: grpc.StatusCode.NOT_FOUND,
    RateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    UpstreamError: grpc.StatusCode.UNAVAILABLE,
    OcakError: grpc.StatusCode.INTERNAL,
}


def status_code(exc: OcakError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        code = CODES.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def trailers(exc: OcakError) -> Trailers:
    out: list[tuple[str, str]] = []
    if exc.code:
        out.append(("ocak-error-code", exc.code))
    if exc.param:
        out.append(("ocak-error-param", exc.param))
    if exc.retry_after is not None:
        out.append(("retry-after", str(max(1, math.ceil(exc.retry_after)))))
    if isinstance(exc, ContextLengthExceeded):
        out += [
            ("ocak-prompt-tokens", str(exc.prompt_tokens)),
            ("ocak-max-tokens", str(exc.max_tokens)),
            ("ocak-context-length", str(exc.context)),
        ]
    return tuple(out)
