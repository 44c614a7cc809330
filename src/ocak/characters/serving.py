"""Which model serves a character: a card names an ocak model id.

Today that is a local engine (``state.engines``). The gateway (issue 5) will
resolve the same name as an alias that may point at a hosted provider; it
plugs in as another ``ModelResolver``. Whatever serves a character gets the
packet schema as a ``Constraint`` and its output is validated either way, so a
provider that ignores the schema still yields a valid packet or a clear error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from ocak.engines.base import Engine
from ocak.engines.registry import EngineRegistry
from ocak.protocol.generation import GenerationEvent, GenerationRequest


@dataclass(slots=True)
class ServingModel:
    """What the character engine needs of a model."""

    model_id: str
    backend: str  # e.g. "llama.cpp:default", for usage records
    locality: str  # "local" or "remote"
    context_length: int
    engine: Engine

    def count_tokens(self, text: str) -> int:
        return self.engine.count_tokens(text)

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        return self.engine.generate(request)


ModelResolver = Callable[[str], ServingModel]


def local_resolver(engines: EngineRegistry) -> ModelResolver:
    """Resolve model ids to the server's local engines (404 unknown, 503 loading)."""

    def resolve(model_id: str) -> ServingModel:
        engine = engines.get(model_id)
        return ServingModel(
            model_id=model_id,
            backend=f"{engine.kind}:{engine.model_id}",
            locality="local",
            context_length=engine.info().context_length,
            engine=engine,
        )

    return resolve
