"""What every model call passes before it reaches a target, on every transport.

The key may use the model (403), the request is within the server's input caps
and its text is valid Unicode (400 naming the parameter), and the key is within
its limits (429). A request that asks for no ``max_tokens`` gets the server's
cap, when one is set.
"""

from __future__ import annotations

from typing import Any, Protocol

from ocak.config import Settings
from ocak.errors import InvalidRequest
from ocak.protocol.openai import ChatCompletionRequest, CompletionRequest
from ocak.serving.context import CallContext
from ocak.store.keys import KeyInfo

ModelRequest = ChatCompletionRequest | CompletionRequest


class KeyChecks(Protocol):
    """The key checks admission needs (``server.auth.Authenticator`` is one)."""

    def permit(self, key: KeyInfo | None, model: str) -> None: ...

    def limit(self, key: KeyInfo | None) -> None: ...


def check_input(settings: Settings, body: ModelRequest) -> None:
    """The server's caps on message count and ``max_tokens`` (applies the default cap)."""
    if isinstance(body, ChatCompletionRequest):
        if len(body.messages) > settings.max_messages:
            raise InvalidRequest(
                f"Too many messages: {len(body.messages)}; this server accepts at most "
                f"{settings.max_messages}.",
                param="messages",
            )
        param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        asked = body.max_completion_tokens or body.max_tokens
    else:
        param, asked = "max_tokens", body.max_tokens
    cap = settings.max_tokens_limit
    if cap is None:
        return
    if asked is None:
        body.max_tokens = cap
    elif asked > cap:
        raise InvalidRequest(
            f"Invalid '{param}': {asked} is more than this server allows ({cap}).", param=param
        )


def check_text(value: Any, path: str = "") -> None:
    """400 for text that is not valid Unicode (JSON can spell lone surrogates: "\\ud800").

    Such text cannot be encoded for a tokenizer, a log line or a database.
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRequest(
                f"Invalid value for '{path}': the text is not valid Unicode "
                "(it contains a lone surrogate such as \\ud800).",
                param=path or None,
            ) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_text(item, f"{path}.[{i}]")


def admit_model(keys: KeyChecks, ctx: CallContext, model: str, backend: str | None = None) -> None:
    """For calls whose body is not an OpenAI chat or completion (audio, embeddings,
    character turns): the record learns the model (and a local backend), then the key's
    permission (403) and limits (429)."""
    ctx.record.model = model
    if backend is not None:
        ctx.record.backend, ctx.record.locality = backend, "local"
    keys.permit(ctx.key, model)
    keys.limit(ctx.key)


def admit(settings: Settings, keys: KeyChecks, ctx: CallContext, body: ModelRequest) -> None:
    """403, 400 or 429 before any target is tried; the record learns the model first."""
    ctx.record.model = body.model
    keys.permit(ctx.key, body.model)
    check_input(settings, body)
    check_text(body.model_dump(exclude_none=True))
    keys.limit(ctx.key)
