"""The graders a suite's ``assert:`` lists, and how one is read from YAML.

Each yields pass/fail, a score in [0, 1] and a reason. The ones here look only at the
answer; ``judges`` holds those that ask a model (embedding similarity, LLM judge).
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar, Literal

import jsonschema
from pydantic import Field, ValidationError, field_validator

from ocak.evals import expression
from ocak.evals.base import Grade, GradeContext, Grader, clip, parse_json_output
from ocak.evals.judges import Judge, Similar


def _texts(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


class Equals(Grader):
    """The output equals ``value`` (default: the case's reference), surrounding
    whitespace ignored; ``ignore_case`` for a case-blind match."""

    kinds: ClassVar[tuple[str, ...]] = ("equals",)

    type: Literal["equals"]
    value: str | None = None
    ignore_case: bool = False

    def summary(self) -> str:
        return "equals reference" if self.value is None else f"equals {clip(self.value, 40)!r}"

    def uses_reference(self) -> bool:
        return self.value is None

    async def grade(self, ctx: GradeContext) -> Grade:
        want = self.value if self.value is not None else (ctx.reference or "")
        got, expected = ctx.answer.output.strip(), want.strip()
        if self.ignore_case:
            got, expected = got.casefold(), expected.casefold()
        if got == expected:
            return self.verdict(True, "equal")
        return self.verdict(False, f"got {clip(ctx.answer.output)!r}")


class Contains(Grader):
    """The output contains ``value`` (every one of a list); ``icontains`` ignores case;
    ``not-contains`` / ``not-icontains``: none of them appears."""

    kinds: ClassVar[tuple[str, ...]] = ("contains", "icontains", "not-contains", "not-icontains")

    type: Literal["contains", "icontains", "not-contains", "not-icontains"]
    value: str | list[str] = Field(min_length=1)

    def summary(self) -> str:
        return f"{self.type} {', '.join(repr(clip(v, 30)) for v in _texts(self.value))}"

    async def grade(self, ctx: GradeContext) -> Grade:
        blind = "icontains" in self.type
        text = ctx.answer.output.casefold() if blind else ctx.answer.output
        found = [v for v in _texts(self.value) if (v.casefold() if blind else v) in text]
        wanted = _texts(self.value)
        if self.type.startswith("not-"):
            if found:
                return self.verdict(False, f"found {found[0]!r}")
            return self.verdict(True, "none found")
        missing = [v for v in wanted if v not in found]
        if missing:
            score = len(found) / len(wanted)
            return self.verdict(False, f"missing {missing[0]!r}", score)
        return self.verdict(True, "all found")


class Regex(Grader):
    """The output matches ``pattern`` (Python syntax, searched anywhere); ``ignore_case``;
    ``negate``: it must not match."""

    kinds: ClassVar[tuple[str, ...]] = ("regex",)

    type: Literal["regex"]
    pattern: str = Field(min_length=1)
    ignore_case: bool = False
    negate: bool = False

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return v

    def summary(self) -> str:
        return f"{'not ' if self.negate else ''}regex /{clip(self.pattern, 40)}/"

    async def grade(self, ctx: GradeContext) -> Grade:
        flags = re.IGNORECASE if self.ignore_case else 0
        match = re.search(self.pattern, ctx.answer.output, flags)
        if self.negate:
            if match:
                return self.verdict(False, f"matched {clip(match.group(0), 40)!r}")
            return self.verdict(True, "no match")
        if match:
            return self.verdict(True, f"matched {clip(match.group(0), 40)!r}")
        return self.verdict(False, f"no match in {clip(ctx.answer.output)!r}")


def _check_schema(schema: dict[str, Any]) -> dict[str, Any]:
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"not a valid JSON schema: {exc.message}") from None
    return schema


def _schema_problem(schema: dict[str, Any], value: Any) -> str | None:
    """Why ``value`` does not fit ``schema`` (the first problem), or None."""
    validator = jsonschema.validators.validator_for(schema)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{where + ': ' if where else ''}{error.message}"


class IsJson(Grader):
    """The output is JSON (a surrounding ```json fence allowed)."""

    kinds: ClassVar[tuple[str, ...]] = ("is-json",)

    type: Literal["is-json"]

    async def grade(self, ctx: GradeContext) -> Grade:
        ok, _ = parse_json_output(ctx.answer.output)
        return self.verdict(ok, "valid JSON" if ok else f"not JSON: {clip(ctx.answer.output)!r}")


class JsonSchema(Grader):
    """The output is JSON valid against ``schema``."""

    kinds: ClassVar[tuple[str, ...]] = ("json-schema",)

    type: Literal["json-schema"]
    json_schema: dict[str, Any] = Field(alias="schema")

    @field_validator("json_schema")
    @classmethod
    def _schema(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _check_schema(v)

    def summary(self) -> str:
        return "json-schema"

    async def grade(self, ctx: GradeContext) -> Grade:
        ok, value = parse_json_output(ctx.answer.output)
        if not ok:
            return self.verdict(False, f"not JSON: {clip(ctx.answer.output)!r}")
        problem = _schema_problem(self.json_schema, value)
        return self.verdict(problem is None, problem or "valid against the schema")


class ToolCall(Grader):
    """The answer calls the tool ``tool`` with arguments that are a JSON object, valid
    against ``parameters`` when given. The request offers that tool (unless the case's
    params give ``tools`` of their own)."""

    kinds: ClassVar[tuple[str, ...]] = ("tool-call",)

    type: Literal["tool-call"]
    tool_name: str = Field(alias="tool", min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None

    @field_validator("parameters")
    @classmethod
    def _schema(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if v is None else _check_schema(v)

    def summary(self) -> str:
        return f"tool-call {self.tool_name}"

    def tool(self) -> dict[str, Any]:
        function: dict[str, Any] = {
            "name": self.tool_name,
            "parameters": self.parameters or {"type": "object"},
        }
        if self.description:
            function["description"] = self.description
        return {"type": "function", "function": function}

    async def grade(self, ctx: GradeContext) -> Grade:
        calls = [c for c in ctx.answer.tool_calls if c.name == self.tool_name]
        if not calls:
            named = ", ".join(c.name for c in ctx.answer.tool_calls) or "none"
            return self.verdict(False, f"no call to {self.tool_name} (calls: {named})")
        problem = ""
        for call in calls:
            try:
                arguments = json.loads(call.arguments or "{}")
            except ValueError:
                problem = f"arguments are not JSON: {clip(call.arguments)!r}"
                continue
            if not isinstance(arguments, dict):
                problem = "arguments are not a JSON object"
                continue
            if self.parameters is not None:
                found = _schema_problem(self.parameters, arguments)
                if found:
                    problem = f"arguments do not fit: {found}"
                    continue
            return self.verdict(True, f"{self.tool_name}({clip(call.arguments, 60)})")
        return self.verdict(False, problem)


class Expression(Grader):
    """An expression over the answer (``expression`` module): true passes; a number is the
    score, passing at ``threshold`` or above."""

    kinds: ClassVar[tuple[str, ...]] = ("expression",)

    type: Literal["expression"]
    expr: str = Field(alias="value", min_length=1)
    threshold: float = Field(0.5, ge=0, le=1)

    @field_validator("expr")
    @classmethod
    def _allowed(cls, v: str) -> str:
        try:
            expression.check(v)
        except expression.ExpressionError as exc:
            raise ValueError(str(exc)) from None
        return v

    def summary(self) -> str:
        return f"expression {clip(self.expr, 50)}"

    def uses_reference(self) -> bool:
        return "reference" in self.expr

    async def grade(self, ctx: GradeContext) -> Grade:
        a = ctx.answer
        calls = []
        for c in a.tool_calls:
            ok, args = parse_json_output(c.arguments)
            calls.append({"name": c.name, "arguments": args if ok else c.arguments})
        names = {
            "output": a.output,
            "json": a.parsed_json(),
            "reference": ctx.reference,
            "input": ctx.input,
            "tool_calls": calls,
            "finish_reason": a.finish_reason,
            "prompt_tokens": a.prompt_tokens,
            "completion_tokens": a.completion_tokens,
            "latency_ms": a.latency_ms,
        }
        try:
            value = expression.evaluate(self.expr, names)
        except expression.ExpressionError as exc:
            return self.failed(f"expression failed: {exc}")
        if isinstance(value, int | float) and not isinstance(value, bool):
            score = min(1.0, max(0.0, float(value)))
            return self.verdict(score >= self.threshold, f"= {value}", score)
        return self.verdict(bool(value), f"= {clip(repr(value), 60)}")


GRADERS: dict[str, type[Grader]] = {
    kind: cls
    for cls in (Equals, Contains, Regex, IsJson, JsonSchema, ToolCall, Expression, Similar, Judge)
    for kind in cls.kinds
}


class GraderError(ValueError):
    """A grader that cannot be read: ``problems`` are (path within it, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{p}: {m}" if p else m for p, m in problems))
        self.problems = problems


def parse_grader(raw: Any) -> Grader:
    """A grader from its YAML mapping (``type`` picks the kind); ``GraderError`` names the
    field that is wrong."""
    if isinstance(raw, str) and raw in GRADERS:
        raw = {"type": raw}
    if not isinstance(raw, dict):
        raise GraderError([("", "a grader is a mapping with a 'type'")])
    kind = raw.get("type")
    if kind not in GRADERS:
        known = ", ".join(sorted(GRADERS))
        raise GraderError([("type", f"unknown grader {kind!r} (known: {known})")])
    try:
        return GRADERS[kind].model_validate(raw)
    except ValidationError as exc:
        problems = [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.errors()]
        raise GraderError(problems) from None
