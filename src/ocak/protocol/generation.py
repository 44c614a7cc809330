"""Engine-facing types: what to generate, and the events a generation emits.

These are the internal contract between the API layers (HTTP, gRPC, characters)
and the engines. They are plain dataclasses so engines need no pydantic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

FinishReason = Literal["stop", "length", "tool_calls", "cancelled", "error"]

# llama-server's default window for the penalties (``repeat_last_n``)
PENALTY_LAST_N = 64
# The samplers' values that change nothing (what a field left unset means to an engine)
NEUTRAL_SAMPLING: dict[str, float | int] = {
    "temperature": 1.0,
    "top_p": 1.0,
    "top_k": 0,
    "min_p": 0.0,
    "repeat_penalty": 1.0,
}


@dataclass(frozen=True, slots=True)
class Message:
    """One chat turn as the engine's chat template sees it."""

    role: str
    content: str
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """OpenAI's message shape (what chat templates and remote providers take)."""
        item: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.name:
            item["name"] = self.name
        if self.tool_calls:
            item["tool_calls"] = self.tool_calls
        if self.tool_call_id:
            item["tool_call_id"] = self.tool_call_id
        return item


@dataclass(slots=True)
class Constraint:
    """A decoding constraint the output must match.

    ``kind="json"``: JSON valid against ``schema`` (any JSON object when None).
    ``kind="lark"``: the Lark grammar in ``grammar`` (llguidance syntax, which can
    embed JSON schemas with ``%json {...}``).
    """

    kind: Literal["json", "lark"] = "json"
    schema: dict[str, Any] | None = None
    grammar: str | None = None
    # The request parameter the constraint came from, for error messages.
    param: str = "response_format"


@dataclass(frozen=True, slots=True)
class Adapter:
    """A LoRA adapter applied to a request's model at ``scale`` (0: as if absent, 1: as
    trained). ``path`` is the adapter's file, filled from the model store by serving."""

    name: str
    scale: float = 1.0
    path: str | None = None


@dataclass(slots=True)
class GenerationRequest:
    """A request to one engine model. Exactly one of ``prompt`` and ``messages`` is set."""

    model: str
    prompt: str | None = None
    messages: list[Message] | None = None
    max_tokens: int | None = None
    # With no max_tokens: at most this many, or the rest of the context if that is less
    # (the server's local default, which must never turn a request into a 400)
    soft_max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    # 0 = off; llama.cpp's multiplicative penalty (1 = off) over the last repeat_last_n
    # tokens (-1 = all of them, 0 = none)
    top_k: int = 0
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = PENALTY_LAST_N
    stop: list[str] = field(default_factory=list)
    constraint: Constraint | None = None
    tools: list[dict[str, Any]] | None = None
    # Per-request budget for waiting in the scheduler's queue (seconds); None = engine default.
    queue_timeout: float | None = None
    adapters: tuple[Adapter, ...] = ()
    # The conversation it belongs to (a character session): an alias with session affinity
    # sends it to the replica that holds its prefix's KV cache.
    session: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of generated text (always whole UTF-8 characters)."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """Part of a tool call: the first delta of a call has ``id`` and ``name``."""

    index: int
    arguments: str = ""
    id: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Finished:
    """The last event of every generation; ``stop_sequence`` is the one of the request's
    stop strings that ended it (None when it ended otherwise, or upstream did not say)."""

    reason: FinishReason
    usage: Usage
    stop_sequence: str | None = None


GenerationEvent = TextDelta | ToolCallDelta | Finished
