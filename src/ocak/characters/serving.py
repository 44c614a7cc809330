"""Which model serves a character: a card names an ocak model (a local engine or an alias).

``serving_resolver`` resolves the name the way the HTTP API does: a local
engine id directly, an alias through the gateway's router (fallback, local-only,
remote providers). Whatever serves a character gets the packet schema as a
``Constraint`` (local engines enforce it while decoding, remote providers get it
as a ``json_schema`` response format) and its output is validated either way, so
a provider that ignores the schema still yields a valid packet or a clear error.
When the turn is traced, each model call is a ``chat {model}`` span (``traced``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ocak import telemetry
from ocak.engines.base import Engine
from ocak.engines.registry import EngineRegistry
from ocak.gateway.router import LocalTarget, RemoteTarget, Served
from ocak.protocol.generation import Finished, GenerationEvent, GenerationRequest
from ocak.serving.service import ModelServing
from ocak.telemetry import genai

# Assumed for a model whose window ocak cannot know (a remote provider's).
REMOTE_CONTEXT = 8192

Generate = Callable[[GenerationRequest], AsyncIterator[GenerationEvent]]


@dataclass(slots=True)
class ServingModel:
    """What the character engine needs of a model."""

    model_id: str
    backend: str  # e.g. "llama.cpp:default", for usage records (set once routed)
    locality: str  # "local" or "remote" (set once routed)
    context_length: int
    counter: Callable[[str], int]
    generator: Generate
    # For spans: the provider and model that served (set once routed; an engine's kind).
    provider: str = "ocak"
    served_model: str | None = None

    def count_tokens(self, text: str) -> int:
        return self.counter(text)

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        if telemetry.current() is None:
            return self.generator(request)
        return traced(self, request)


async def traced(model: ServingModel, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
    """``model``'s generation as a ``chat {model}`` span, a child of the current span when
    it starts: made current while the first event is awaited (routing, the gateway's
    attempts, the engine's steps), then ended with the Finished event's usage."""
    span = telemetry.start(
        f"chat {model.model_id}",
        {
            genai.OPERATION: "chat",
            genai.PROVIDER: model.provider,
            genai.REQUEST_MODEL: model.model_id,
            **genai.request_attributes(
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                top_p=request.top_p,
                seed=request.seed,
                stream=True,
            ),
        },
    )
    events = model.generator(request)
    failure: BaseException | None = None
    finished = False
    done: dict[str, Any] = {}
    try:
        with telemetry.active(span):
            first = await anext(events)
        done.update(
            {
                genai.PROVIDER: model.provider,
                genai.RESPONSE_MODEL: model.served_model or model.model_id,
                genai.TARGET: model.backend,
                genai.LOCALITY: model.locality,
            }
        )
        event: GenerationEvent | None = first
        while event is not None:
            if isinstance(event, Finished):
                finished = True
                usage = event.usage
                done.update(
                    genai.usage_attributes(
                        usage.prompt_tokens,
                        usage.completion_tokens,
                        event.reason,
                        usage.cached_tokens,
                    )
                )
            yield event
            event = await anext(events, None)
    except BaseException as exc:
        # The consumer stopping at the Finished event (GeneratorExit) is no failure.
        failure = None if finished and isinstance(exc, GeneratorExit) else exc
        raise
    finally:
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()
        telemetry.finish(span, done, error=failure)


class ModelResolver(Protocol):
    """Find the model serving a card; ``local_only`` keeps it on this machine."""

    async def __call__(self, model_id: str, *, local_only: bool = False) -> ServingModel: ...


def counter_of(engine: Engine | None) -> Callable[[str], int]:
    """The engine's tokenizer while it is loaded; else about four characters a token."""

    def count(text: str) -> int:
        if engine is not None and engine.state == "ready":
            return engine.count_tokens(text)
        return len(text) // 4 + 1

    return count


def local_resolver(engines: EngineRegistry) -> ModelResolver:
    """Resolve model ids to the server's local engines, loading one on demand (404 unknown,
    503 when it cannot load)."""

    async def resolve(model_id: str, *, local_only: bool = False) -> ServingModel:
        engine = await engines.load(model_id)  # its tokenizer counts the turn's budget
        return ServingModel(
            model_id=engine.model_id,
            backend=f"{engine.kind}:{engine.model_id}",
            locality="local",
            context_length=engine.info().context_length,
            counter=counter_of(engine),
            generator=lambda request: engines.generate(model_id, request),
            provider=engine.kind,
            served_model=engine.model_id,
        )

    return resolve


def serving_resolver(serving: ModelServing) -> ModelResolver:
    """Resolve a card's model like the API does: an alias through the serving layer (the
    gateway's routing, the alias's params), or an engine."""
    router, engines = serving.router, serving.engines
    local = local_resolver(engines)

    async def resolve(model_id: str, *, local_only: bool = False) -> ServingModel:
        alias = router.resolve(model_id)  # ModelNotFound for an unknown name
        if alias.direct:
            return await local(model_id)
        local_ids = [t.engine for t in alias.targets if isinstance(t, LocalTarget)]
        local_targets = [engines.find(name) for name in local_ids]
        ready = [e for e in local_targets if e is not None and e.state == "ready"]
        # Budgets need a token count before the answer: the first local target's tokenizer
        # (exact when it serves), else any ready engine's, else about four characters a token.
        counter_engine = ready[0] if ready else next(iter(engines.ready), None)
        remote = any(isinstance(t, RemoteTarget) for t in alias.targets)
        windows = [e.info().context_length for e in ready]
        model = ServingModel(
            model_id=model_id,
            backend=alias.targets[0].name if alias.targets else model_id,
            locality="remote" if remote else "local",
            context_length=min(windows + ([REMOTE_CONTEXT] if remote or not windows else [])),
            counter=counter_of(counter_engine),
            generator=lambda request: serving.generate(
                request, local_only=local_only, on_served=served
            ),
        )

        def served(result: Served[Any]) -> None:
            model.backend, model.locality = serving.served_backend(result)
            model.provider, model.served_model = router.describe(result.target)

        return model

    return resolve
