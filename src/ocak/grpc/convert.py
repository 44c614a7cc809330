"""Between the proto's messages and ocak's own types.

Requests go through the same pydantic models as the HTTP API
(``ChatCompletionRequest``, ``CompletionRequest``), so a gRPC call takes the
same parameters, with the same bounds and the same error messages naming them.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ocak.engines.base import Engine
from ocak.engines.registry import AdapterFile
from ocak.gateway.router import Alias
from ocak.grpc.v1 import ocak_pb2 as pb
from ocak.protocol.generation import FinishReason, Usage
from ocak.protocol.openai import ChatCompletionRequest, CompletionRequest
from ocak.server.errors import validation_error
from ocak.serving.audio import SpeechModel
from ocak.serving.embeddings import EmbeddingModel

M = TypeVar("M", bound=BaseModel)

FINISH_REASONS: dict[FinishReason, pb.FinishReason.ValueType] = {
    "stop": pb.FINISH_REASON_STOP,
    "length": pb.FINISH_REASON_LENGTH,
    "tool_calls": pb.FINISH_REASON_TOOL_CALLS,
    "cancelled": pb.FINISH_REASON_CANCELLED,
    "error": pb.FINISH_REASON_ERROR,
}

_SAMPLING = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty", "user")


def _validate(model: type[M], data: dict[str, Any]) -> M:
    """Validate like the HTTP layer does: a 400-style ``InvalidRequest`` naming the field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


def _sampling(request: pb.GenerateRequest | pb.ChatRequest) -> dict[str, Any]:
    data: dict[str, Any] = {"model": request.model}
    for name in _SAMPLING:
        if request.HasField(name):  # type: ignore[arg-type]
            data[name] = getattr(request, name)
    if request.stop:
        data["stop"] = list(request.stop)
    if request.HasField("max_tokens"):
        data["max_tokens"] = request.max_tokens
    return data


def chat_request(request: pb.ChatRequest) -> ChatCompletionRequest:
    messages: list[dict[str, Any]] = []
    for m in request.messages:
        message: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.HasField("name"):
            message["name"] = m.name
        if m.HasField("tool_call_id"):
            message["tool_call_id"] = m.tool_call_id
        messages.append(message)
    return _validate(ChatCompletionRequest, {**_sampling(request), "messages": messages})


def completion_request(request: pb.GenerateRequest) -> CompletionRequest:
    return _validate(CompletionRequest, {**_sampling(request), "prompt": request.prompt})


def usage(u: Usage) -> pb.Usage:
    return pb.Usage(
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        total_tokens=u.total_tokens,
        cached_tokens=u.cached_tokens,
    )


def finish_reason(reason: FinishReason) -> pb.FinishReason.ValueType:
    return FINISH_REASONS.get(reason, pb.FINISH_REASON_UNSPECIFIED)


def model(found: Engine | Alias | AdapterFile | SpeechModel | EmbeddingModel) -> pb.Model:
    """A local engine; an alias (engine ``alias``, state ``ready``: its targets are routed);
    a LoRA adapter (state ``adapter``); a speech model (loaded on first use: ``ready``)."""
    if isinstance(found, Alias):
        return pb.Model(id=found.name, engine="alias", state="ready")
    if isinstance(found, AdapterFile):
        return pb.Model(id=found.name, engine="llama.cpp", state="adapter")
    if isinstance(found, SpeechModel | EmbeddingModel):
        return pb.Model(id=found.id, engine=found.engine, state="ready")
    engine = found
    info = engine.info()
    out = pb.Model(
        id=info.id, engine=info.engine, state=engine.state, context_length=info.context_length
    )
    if info.quantization is not None:
        out.quantization = info.quantization
    if info.size_bytes is not None:
        out.size_bytes = info.size_bytes
    return out
