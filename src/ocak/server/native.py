"""What the APIs other tools speak (Ollama's, KoboldCpp's, llama-server's, Anthropic's)
share: a body translated into OpenAI's request goes through serving exactly as
``/v1/chat/completions`` does (admission, keys and limits, aliases and fallback,
usage record, locality headers) and comes back as engine events whichever target
served it, for the route to render in its own wire format.

The request always goes out as a stream (a remote target's chunks become events
as they arrive); ``record.stream`` keeps what the client asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import ValidationError
from starlette.requests import Request

from ocak.engines.base import Engine
from ocak.engines.stream import Primed
from ocak.errors import ModelNotFound
from ocak.gateway.router import Alias, LocalTarget
from ocak.protocol.openai import ChatCompletionRequest, CompletionRequest
from ocak.providers.base import Endpoint
from ocak.server.auth import get_key
from ocak.server.errors import validation_error
from ocak.server.proxy import http_context, served_headers
from ocak.server.services import Services, get_state
from ocak.server.tracking import get_record


@dataclass(slots=True)
class NativeCall:
    """A served request: its events, and the headers that say who served it and where."""

    primed: Primed
    headers: dict[str, str]


def chat_request(data: dict[str, Any], param_prefix: str = "") -> ChatCompletionRequest:
    """OpenAI's chat request from a translated body; a field that does not validate is a 400
    naming it (``param_prefix`` spells it the way the client's API does)."""
    return _validated(ChatCompletionRequest, data, param_prefix)


def completion_request(data: dict[str, Any], param_prefix: str = "") -> CompletionRequest:
    """OpenAI's completion request from a translated body (see ``chat_request``)."""
    return _validated(CompletionRequest, data, param_prefix)


R = TypeVar("R", ChatCompletionRequest, CompletionRequest)


def _validated(kind: type[R], data: dict[str, Any], param_prefix: str) -> R:
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, param_prefix) from None


async def serve_events(
    request: Request, body: ChatCompletionRequest | CompletionRequest, endpoint: Endpoint
) -> NativeCall:
    """Serve ``body`` as ``/v1/chat/completions`` (or ``/v1/completions``) would, as events."""
    record = get_record(request)
    record.model, record.stream = body.model, bool(body.stream)
    state = get_state(request)
    serving, ctx = state.serving, http_context(request)
    streamed = body.model_copy(update={"stream": True})
    serving.admit(ctx, streamed)  # key may use the model (403), input caps (400), limits (429)
    served = await serving.serve(ctx, streamed, endpoint)
    record.stream = bool(body.stream)
    primed = await serving.events(served.result, record)
    return NativeCall(primed, served_headers(served))


def default_model(request: Request, requested: str | None) -> str:
    """The model for APIs whose bodies name none (KoboldCpp's, llama-server's serve one):
    the one asked for, else the first this server (and the caller's key) answers for."""
    if requested:
        return requested
    state = get_state(request)
    for found in state.serving.models(get_key(request)):
        if isinstance(found, Alias | Engine):
            return found.name if isinstance(found, Alias) else found.model_id
    raise ModelNotFound("", "This server serves no model (or none your key may use).")


def local_engine(state: Services, model: str) -> str | None:
    """The local engine behind a model name: an alias's first local target, or the name
    itself; None for an alias served only remotely."""
    alias = state.serving.router.aliases.get(model)
    if alias is None:
        return model
    return next((t.engine for t in alias.targets if isinstance(t, LocalTarget)), None)
