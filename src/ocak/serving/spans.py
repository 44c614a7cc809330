"""A model request's own span, ``chat {model}`` (or ``text_completion {model}``), when traced.

It begins at admission, holds the gateway's attempts as children, and ends with the
request (ocak.telemetry.tracing: the record's usage, finish reason, time to first chunk);
its GenAI attributes say what was asked (the public model name, max_tokens, temperature,
top_p) and what served it (provider, model, target, locality). No content.
"""

from __future__ import annotations

from typing import Any

from ocak import telemetry
from ocak.gateway.router import Router, Served
from ocak.protocol.openai import ChatCompletionRequest
from ocak.serving.admission import ModelRequest
from ocak.telemetry import genai


def model_call(body: ModelRequest) -> telemetry.Span | None:
    """The request's span, ended with the request; None when it is not traced."""
    if telemetry.current() is None:
        return None
    operation = "chat" if isinstance(body, ChatCompletionRequest) else "text_completion"
    span = telemetry.start(
        f"{operation} {body.model}", {genai.OPERATION: operation, genai.REQUEST_MODEL: body.model}
    )
    telemetry.until_request_end(span)
    return span


def admitted(span: telemetry.Span | None, body: ModelRequest) -> None:
    """The settings of the admitted request (the server's default cap applied)."""
    if span is None:
        return
    max_tokens = body.max_tokens
    if isinstance(body, ChatCompletionRequest):
        max_tokens = body.max_completion_tokens or body.max_tokens
    span.set_attributes(
        genai.request_attributes(
            max_tokens=max_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            seed=body.seed,
            stream=bool(body.stream),
        )
    )


def served(span: telemetry.Span | None, router: Router, result: Served[Any]) -> None:
    """What served the request: provider, model, alias target, locality."""
    if span is None:
        return
    provider, model = router.describe(result.target)
    span.set_attributes(
        {
            genai.PROVIDER: provider,
            genai.RESPONSE_MODEL: model,
            genai.TARGET: result.target.name,
            genai.LOCALITY: result.locality,
        }
    )


def response_id(span: Any, value: str) -> None:
    """The id of the answer the client got (``chatcmpl-...``)."""
    if span is not None:
        span.set_attribute(genai.RESPONSE_ID, value)
