"""A scripted engine for tests of logic that needs no model (shipped like httpx's MockTransport).

It "generates" a fixed reply one word at a time, honouring ``max_tokens``,
``stop`` and cancellation, so routing, errors and streaming can be tested fast.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from ocak.config import Settings
from ocak.engines.base import Engine, EngineStats, ModelInfo
from ocak.engines.text import StopMatcher, check_ids
from ocak.errors import ContextLengthExceeded
from ocak.protocol.generation import (
    Finished,
    GenerationEvent,
    GenerationRequest,
    TextDelta,
    Usage,
)

Script = Callable[[GenerationRequest], str]


def echo(request: GenerationRequest) -> str:
    """Default script: repeat the prompt or the last message."""
    if request.messages:
        return f"You said: {request.messages[-1].content}"
    return request.prompt or ""


class FakeEngine(Engine):
    kind = "fake"

    def __init__(
        self,
        model_id: str = "fake",
        *,
        script: Script = echo,
        delay: float = 0.0,
        context_length: int = 512,
        load_delay: float = 0.0,
        fail_load: str | None = None,
    ) -> None:
        super().__init__(model_id)
        self.script = script
        self.delay = delay
        self.context_length = context_length
        self.load_delay = load_delay
        self.fail_load = fail_load
        self.active = 0
        self.cancelled = 0
        self._vocab: dict[str, int] = {}

    async def load(self) -> None:
        await asyncio.sleep(self.load_delay)
        if self.fail_load:
            self.state, self.error = "error", self.fail_load
        else:
            self.state = "ready"

    def info(self) -> ModelInfo:
        return ModelInfo(self.model_id, self.kind, "(fake)", self.context_length)

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        """One id a word (as ``count_tokens`` counts), numbered as first seen."""
        return [self._vocab.setdefault(w, len(self._vocab)) for w in text.split()]

    def detokenize(self, ids: list[int]) -> str:
        words = list(self._vocab)
        check_ids(ids, len(words))
        return " ".join(words[i] for i in ids)

    def stats(self) -> EngineStats:
        return EngineStats(active=self.active, slots=16)

    def _prompt_tokens(self, request: GenerationRequest) -> int:
        if request.messages:
            return sum(self.count_tokens(m.content) + 4 for m in request.messages)
        return self.count_tokens(request.prompt or "")

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        prompt_tokens = self._prompt_tokens(request)
        room = self.context_length - prompt_tokens
        limit = request.max_tokens or min(request.soft_max_tokens or room, room)
        if prompt_tokens + limit > self.context_length:
            raise ContextLengthExceeded(
                prompt_tokens=prompt_tokens, max_tokens=limit, context=self.context_length
            )
        words = self.script(request).split(" ")
        stops = StopMatcher(request.stop)
        produced = 0
        reason = "stop"
        finished = False
        self.active += 1
        try:
            for i, word in enumerate(words):
                if produced >= limit:
                    reason = "length"
                    break
                if self.delay:
                    await asyncio.sleep(self.delay)
                produced += 1
                text = stops.feed(word if i == 0 else " " + word)
                if text:
                    yield TextDelta(text)
                if stops.stopped:
                    break
            if not stops.stopped:
                rest = stops.flush()
                if rest:
                    yield TextDelta(rest)
            finished = True
            usage = Usage(prompt_tokens, produced)
            yield Finished(reason, usage, stops.matched)  # type: ignore[arg-type]
        except (asyncio.CancelledError, GeneratorExit):
            if not finished:  # closed after its last event is not a cancellation
                self.cancelled += 1
            raise
        finally:
            self.active -= 1


def from_spec(model_id: str, path: Path, settings: Settings) -> FakeEngine:
    """The ``fake`` engine kind (entry point ``ocak.engines``): echoes, for pure-logic tests."""
    return FakeEngine(model_id, context_length=settings.ctx_size)
