"""The engine interface every local backend implements.

An engine serves one model. It loads (off the event loop), reports readiness,
counts tokens, and streams generations as ``GenerationEvent``s. Admission
errors (context too long, queue full) are raised by the first ``__anext__`` of
``generate``, before any text, so the edges can still answer with a status code.
Closing the iterator (a client that left) cancels the generation.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from ocak.errors import UnsupportedParameter
from ocak.protocol.generation import NEUTRAL_SAMPLING, GenerationEvent, GenerationRequest

EngineState = Literal["unloaded", "loading", "ready", "error", "closed"]


@dataclass(slots=True)
class ModelInfo:
    """What ``/v1/models`` and ``ocak models list`` show about a served model."""

    id: str
    engine: str
    path: str
    context_length: int
    quantization: str | None = None
    size_bytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class EngineStats:
    """Live figures for health and metrics."""

    active: int = 0
    queued: int = 0
    slots: int = 0


class Engine(abc.ABC):
    """A local model behind ocak's streaming interface."""

    kind: str = "engine"

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        self.state: EngineState = "loading"
        self.error: str | None = None

    @abc.abstractmethod
    async def load(self) -> None:
        """Load the model; sets ``state`` to ready, or to error with ``error`` filled."""

    @abc.abstractmethod
    def info(self) -> ModelInfo: ...

    @abc.abstractmethod
    def count_tokens(self, text: str) -> int: ...

    @abc.abstractmethod
    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        """Stream a generation; the last event is always ``Finished``."""

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        """The model's own token ids for ``text`` (KoboldCpp's tokencount, llama-server's
        /tokenize); engines without a tokenizer refuse."""
        raise UnsupportedParameter("tokenize", f"the {self.kind} engine has no tokenizer")

    def detokenize(self, ids: list[int]) -> str:
        """The text of token ids; an id outside the vocabulary is a 400."""
        raise UnsupportedParameter("detokenize", f"the {self.kind} engine has no tokenizer")

    # The samplers this engine honours: server and model defaults fill only these, so a
    # default never makes an engine refuse a request.
    samplers: frozenset[str] = frozenset(NEUTRAL_SAMPLING)

    def model_sampling(self) -> dict[str, float]:
        """The sampling the model's own file recommends (empty when it says nothing)."""
        return {}

    def stats(self) -> EngineStats:
        return EngineStats()

    async def close(self) -> None:
        self.state = "closed"
