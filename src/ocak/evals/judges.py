"""Graders that ask a model: embedding similarity to a reference, and an LLM judge.

Both call the server under evaluation (``Helper``), so a judge can be any model or alias
it serves, hosted ones included. A failed call fails the grade and says why; it never
stops the run.
"""

from __future__ import annotations

import math
import re
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from ocak.evals.base import Grade, GradeContext, Grader, HelperError, clip

# The server's bundled embedder (ocak.engines.embedding.BUNDLED_EMBEDDER; a test keeps
# the two equal: evals may not import engines, a sibling part).
DEFAULT_EMBEDDER = "all-minilm-l6-v2"

DEFAULT_CRITERIA = "The answer is correct, relevant to the input and not harmful."
DEFAULT_JUDGE_PROMPT = """You are grading an answer another assistant gave.

Input:
{{input}}

Reference answer (may be empty):
{{reference}}

Criteria: {{rubric}}

Answer to grade:
<<<
{{output}}
>>>

Reply with PASS or FAIL on the first line, then one sentence saying why."""

_PLACEHOLDER = re.compile(r"\{\{\s*(output|reference|input|rubric)\s*\}\}")
_VERDICT = re.compile(r"\b(PASS|FAIL)(?:ED|ES|ING)?\b", re.IGNORECASE)
_FRACTION = re.compile(r"(-?\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)")
_SCORE = re.compile(r"score\W{0,3}(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_NUMBER = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*\.?\s*$")


def cosine(a: list[float], b: list[float]) -> float:
    """Cosine similarity of two vectors (0 when either is all zeros)."""
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


class Similar(Grader):
    """The output's embedding is at least ``threshold`` (cosine) from the reference's:
    ``value`` or else the case's reference; embedded by ``model`` on the server."""

    kinds: ClassVar[tuple[str, ...]] = ("similar", "embedding-similarity")

    type: Literal["similar", "embedding-similarity"]
    value: str | None = Field(None, description="The reference (default: the case's).")
    model: str = Field(DEFAULT_EMBEDDER, min_length=1)
    threshold: float = Field(0.8, ge=-1, le=1)

    def summary(self) -> str:
        return f"similar ≥ {self.threshold:g}"

    def uses_reference(self) -> bool:
        return self.value is None

    async def grade(self, ctx: GradeContext) -> Grade:
        reference = self.value if self.value is not None else (ctx.reference or "")
        if not ctx.answer.output.strip():
            return self.verdict(False, "empty output", 0.0)
        try:
            got, want = await ctx.helper.embed(self.model, [ctx.answer.output, reference])
        except HelperError as exc:
            return self.failed(f"embedding failed: {exc}")
        if len(got) != len(want) or not got:
            return self.failed("embedding failed: vectors of different sizes")
        similarity = cosine(got, want)
        return self.verdict(
            similarity >= self.threshold, f"cosine {similarity:.3f}", max(0.0, similarity)
        )


def render(template: str, values: dict[str, str]) -> str:
    """``template`` with ``{{output}}``, ``{{reference}}``, ``{{input}}`` and ``{{rubric}}``
    replaced in one pass (an output that itself holds ``{{...}}`` is left as written)."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), ""), template)


def parse_verdict(text: str) -> tuple[bool | None, float | None]:
    """A judge's answer as (PASS/FAIL or None, a score in [0, 1] or None): the first
    PASS/FAIL word; a score as ``8/10``, ``score: 0.8`` or a bare number (over 1 read as
    out of 10, over 10 as out of 100)."""
    word = _VERDICT.search(text)
    verdict = None if word is None else word.group(1).upper() == "PASS"
    score: float | None = None
    if fraction := _FRACTION.search(text):
        top, bottom = float(fraction.group(1)), float(fraction.group(2))
        score = top / bottom if bottom else None
    else:
        number = _SCORE.search(text) or _NUMBER.match(text)
        if number:
            value = float(number.group(1))
            score = value if value <= 1 else value / 10 if value <= 10 else value / 100
    if score is not None:
        score = min(1.0, max(0.0, score))
    return verdict, score


class Judge(Grader):
    """A model grades the output: ``prompt`` (default ``DEFAULT_JUDGE_PROMPT``) filled in
    and sent to ``model``; its answer is read for PASS/FAIL or a score (passing at
    ``threshold`` or above)."""

    kinds: ClassVar[tuple[str, ...]] = ("llm-judge",)

    type: Literal["llm-judge"]
    model: str = Field(min_length=1)
    prompt: str = Field(DEFAULT_JUDGE_PROMPT, min_length=1, max_length=100_000)
    rubric: str = Field(DEFAULT_CRITERIA, max_length=20_000)
    threshold: float = Field(0.5, ge=0, le=1)
    params: dict[str, Any] = Field(
        default_factory=lambda: {"temperature": 0, "max_tokens": 128},
        description="Request params for the judge's call.",
    )

    @field_validator("prompt")
    @classmethod
    def _has_output(cls, v: str) -> str:
        if not any(m.group(1) == "output" for m in _PLACEHOLDER.finditer(v)):
            raise ValueError("a judge prompt must contain {{output}}")
        return v

    def summary(self) -> str:
        return f"llm-judge {self.model}"

    def uses_reference(self) -> bool:
        return self.prompt != DEFAULT_JUDGE_PROMPT and "reference" in {
            m.group(1) for m in _PLACEHOLDER.finditer(self.prompt)
        }

    async def grade(self, ctx: GradeContext) -> Grade:
        values = {
            "output": ctx.answer.output,
            "reference": ctx.reference or "",
            "input": ctx.input,
            "rubric": self.rubric,
        }
        messages = [{"role": "user", "content": render(self.prompt, values)}]
        try:
            said = await ctx.helper.complete(self.model, messages, self.params)
        except HelperError as exc:
            return self.failed(f"judge failed: {exc}")
        verdict, score = parse_verdict(said)
        reason = f"judge: {clip(said, 120)}"
        if verdict is not None:
            return self.verdict(verdict, reason, score if score is not None else None)
        if score is not None:
            return self.verdict(score >= self.threshold, reason, score)
        return self.failed(f"the judge's answer has neither PASS/FAIL nor a score: {clip(said)!r}")
