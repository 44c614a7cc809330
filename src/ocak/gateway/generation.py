"""Between engine-shaped generation and a provider's OpenAI chat API.

Callers that speak ``GenerationRequest`` (the character engine, through
``serving.ModelServing.generate``) reach a remote target as an OpenAI chat request
(``chat_payload``: a JSON constraint becomes a ``json_schema`` ``response_format``,
which most providers enforce and the caller validates anyway), and the remote
stream comes back as engine events (``remote_events``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ocak.protocol.generation import (
    NEUTRAL_SAMPLING,
    PENALTY_LAST_N,
    Finished,
    FinishReason,
    GenerationEvent,
    GenerationRequest,
    TextDelta,
    Usage,
)
from ocak.providers.base import UpstreamStream
from ocak.providers.errors import TargetCannot

_FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length", "tool_calls": "tool_calls"}


def chat_payload(request: GenerationRequest) -> dict[str, Any]:
    """The OpenAI chat request for ``request`` (messages, sampling, JSON constraint)."""
    if request.messages is None:
        raise TargetCannot("a remote target takes chat messages, not a raw prompt")
    payload: dict[str, Any] = {
        "messages": [m.as_dict() for m in request.messages],
        "temperature": request.temperature,
        "top_p": request.top_p,
        "stream": True,
    }
    if request.max_tokens is not None:
        payload["max_tokens"] = request.max_tokens
    if request.seed is not None:
        payload["seed"] = request.seed
    if request.stop:
        payload["stop"] = request.stop
    if request.presence_penalty:
        payload["presence_penalty"] = request.presence_penalty
    if request.frequency_penalty:
        payload["frequency_penalty"] = request.frequency_penalty
    for name, neutral in NEUTRAL_SAMPLING.items():  # llama-server's / vLLM's extras
        if name not in payload and getattr(request, name) != neutral:
            payload[name] = getattr(request, name)
    if request.repeat_penalty != 1.0 and request.repeat_last_n != PENALTY_LAST_N:
        payload["repeat_last_n"] = request.repeat_last_n
    constraint = request.constraint
    if constraint is not None:
        if constraint.kind != "json":
            raise TargetCannot("a remote target cannot take a grammar constraint")
        schema = constraint.schema or {"type": "object"}
        payload["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": schema},
        }
    return payload


async def remote_events(upstream: UpstreamStream) -> AsyncIterator[GenerationEvent]:
    """An upstream's stream (chat deltas or completion text) as engine events."""
    reason: FinishReason = "stop"
    usage = Usage(0, 0)
    async for chunk in upstream.chunks():
        data = chunk.data
        counted = data.get("usage")
        if isinstance(counted, dict):
            usage = Usage(
                int(counted.get("prompt_tokens") or 0), int(counted.get("completion_tokens") or 0)
            )
        for choice in data.get("choices") or []:
            delta = choice.get("delta") or {}
            text = delta.get("content") if "delta" in choice else choice.get("text")
            if text:
                yield TextDelta(text)
            if choice.get("finish_reason"):
                reason = _FINISH.get(choice["finish_reason"], "stop")
    yield Finished(reason, usage)
