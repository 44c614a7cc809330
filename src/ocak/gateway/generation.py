"""Engine-shaped generation over the gateway: for callers that speak ``GenerationRequest``.

The HTTP routes pass OpenAI JSON through to remote targets untouched. Other
callers (the character engine) build a ``GenerationRequest`` and want
``TextDelta``/``Finished`` events whichever target serves it. ``RoutedModel``
runs such a request through the router: a local target gets it as is, a remote
one as an OpenAI chat request (a JSON constraint becomes a ``json_schema``
``response_format``, which most providers enforce and the caller validates
anyway), and the remote stream comes back as engine events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

from ocak.engines.registry import EngineRegistry
from ocak.engines.stream import Primed, prime
from ocak.gateway.router import Router, Served, Target
from ocak.protocol.generation import (
    Finished,
    FinishReason,
    GenerationEvent,
    GenerationRequest,
    TextDelta,
    Usage,
)
from ocak.providers.base import Call, Locality, UpstreamReply, UpstreamStream
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


def served_backend(result: Served[Any], engines: EngineRegistry) -> tuple[str, Locality]:
    """The usage record's backend and locality for the target that served ``result``."""
    engine = engines.find(result.target.engine) if result.target.engine else None
    backend = f"{engine.kind}:{engine.model_id}" if engine else result.target.name
    return backend, result.locality


class RoutedModel:
    """A public model name (an alias or a local engine id) as an engine-like generator."""

    def __init__(self, router: Router, engines: EngineRegistry, name: str) -> None:
        self.router = router
        self.engines = engines
        self.name = name

    def targets(self) -> list[Target]:
        return list(self.router.resolve(self.name).targets)

    async def generate(
        self,
        request: GenerationRequest,
        *,
        local_only: bool = False,
        on_served: Callable[[Served[Any]], None] | None = None,
    ) -> AsyncIterator[GenerationEvent]:
        """Events of ``request`` from the first target that answers (router fallback)."""

        async def attempt(target: Target) -> tuple[Primed | UpstreamStream, Locality]:
            if target.engine is not None:
                engine = self.engines.get(target.engine)
                mine = replace(request, model=target.engine)
                return await prime(engine.generate(mine)), "local"
            assert target.provider is not None and target.model is not None
            payload = chat_payload(request)
            for k, v in target.params.items():
                payload.setdefault(k, v)
            call = Call(payload, "chat", True, target.timeouts, local_only)
            reason = target.provider.unsupported(call)
            if reason is not None:
                raise TargetCannot(reason)
            upstream = await target.provider.send(target.model, call)
            if isinstance(upstream, UpstreamReply):  # pragma: no cover - asked for a stream
                raise TargetCannot("the provider answered a stream request with one reply")
            return upstream, upstream.locality

        served = await self.router.run(self.name, attempt, local_only=local_only)
        if on_served is not None:
            on_served(served)
        result = served.result
        events = result.events() if isinstance(result, Primed) else remote_events(result)
        try:
            async for event in events:
                yield event
        finally:
            await events.aclose()  # type: ignore[attr-defined]
