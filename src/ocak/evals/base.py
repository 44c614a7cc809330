"""What every grader shares: the answer it judges, its verdict, and the server it may ask.

A grader is a pydantic model (its YAML fields, checked when the suite loads) with one
``grade`` coroutine. Graders that only look at the answer never touch the network; the
embedding and judge graders ask the same server through ``Helper`` (``client.EvalClient``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True)
class ToolCallOut:
    """One tool call in an answer; ``arguments`` as the model wrote them (JSON text)."""

    name: str
    arguments: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "arguments": self.arguments}


@dataclass(frozen=True)
class Answer:
    """What a target answered one sample: its text, tool calls and counts."""

    output: str
    tool_calls: tuple[ToolCallOut, ...] = ()
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: float | None = None

    def parsed_json(self) -> Any:
        """The output as JSON (a surrounding Markdown code fence allowed); ``None`` when it
        is not JSON."""
        ok, value = parse_json_output(self.output)
        return value if ok else None


def parse_json_output(text: str) -> tuple[bool, Any]:
    """``(True, value)`` when ``text`` is JSON, alone or inside one ```json fence."""
    body = text.strip()
    if body.startswith("```"):
        first_newline = body.find("\n")
        if first_newline != -1 and body.endswith("```"):
            body = body[first_newline + 1 : -3].strip()
    try:
        return True, json.loads(body)
    except ValueError:
        return False, None


@dataclass(frozen=True)
class Grade:
    """One grader's verdict on one sample. ``error``: the grader itself could not judge
    (a judge that failed, an expression that raised); the sample then fails."""

    grader: str
    passed: bool
    score: float
    reason: str
    error: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "grader": self.grader,
            "passed": self.passed,
            "score": round(self.score, 6),
            "reason": self.reason,
            "error": self.error,
        }


class HelperError(Exception):
    """A call a grader made to the server failed (its message says how)."""


class Helper(Protocol):
    """The server, for the graders that need a model (``client.EvalClient``); both raise
    ``HelperError``."""

    async def embed(self, model: str, texts: list[str]) -> list[list[float]]: ...

    async def complete(
        self, model: str, messages: list[dict[str, Any]], params: dict[str, Any]
    ) -> str: ...


@dataclass(frozen=True)
class GradeContext:
    """What a grader may look at besides the answer: the case's reference answer, its
    input (the last user message) and the server."""

    answer: Answer
    reference: str | None
    input: str
    helper: Helper
    extra: dict[str, Any] = field(default_factory=dict)


class Grader(BaseModel):
    """A grader's fields as written in the suite (``type`` picks the class)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    kinds: ClassVar[tuple[str, ...]] = ()
    needs_reference: ClassVar[bool] = False

    type: str
    name: str | None = Field(None, max_length=200, description="Shown in reports.")

    def describe(self) -> str:
        """A short name for reports: the ``name`` given, else one made from the fields."""
        return self.name or self.summary()

    def summary(self) -> str:
        return self.type

    def uses_reference(self) -> bool:
        """Whether this grader reads the case's reference answer (so one must exist)."""
        return self.needs_reference

    def tool(self) -> dict[str, Any] | None:
        """A tool the request must offer for this grader (``tool-call``), else None."""
        return None

    async def grade(self, ctx: GradeContext) -> Grade:
        raise NotImplementedError

    def verdict(self, passed: bool, reason: str, score: float | None = None) -> Grade:
        return Grade(
            self.describe(), passed, (1.0 if passed else 0.0) if score is None else score, reason
        )

    def failed(self, reason: str) -> Grade:
        """The grader could not judge: an error, counted as a failure."""
        return Grade(self.describe(), False, 0.0, reason, error=True)


def clip(text: str, limit: int = 80) -> str:
    """``text`` on one line, cut to ``limit`` characters, for reasons and names."""
    one = " ".join(text.split())
    return one if len(one) <= limit else one[: limit - 1] + "…"
