"""The eval graders on answers made here: each kind's pass, fail, score and reason; the
restricted evaluator refusing imports, ``_`` names and attribute tricks; the judge's
answer parsing; grader fields checked with the field named."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ocak.engines.embedding import BUNDLED_EMBEDDER
from ocak.evals import expression
from ocak.evals.base import Answer, Grade, GradeContext, HelperError, ToolCallOut
from ocak.evals.graders import GraderError, parse_grader
from ocak.evals.judges import DEFAULT_EMBEDDER, parse_verdict, render


class FakeHelper:
    """The server, for the model graders: fixed vectors per text, a scripted judge."""

    def __init__(self, judge_says: str = "PASS", fail: bool = False) -> None:
        self.judge_says = judge_says
        self.fail = fail
        self.asked: list[tuple[str, Any]] = []

    async def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        self.asked.append((model, texts))
        if self.fail:
            raise HelperError("HTTP 404: no such model")
        return [[1.0, 0.0] if "cat" in t else [0.6, 0.8] for t in texts]

    async def complete(
        self, model: str, messages: list[dict[str, Any]], params: dict[str, Any]
    ) -> str:
        self.asked.append((model, messages))
        if self.fail:
            raise HelperError("HTTP 503: loading")
        return self.judge_says


def grade(
    spec: dict[str, Any] | str,
    output: str = "",
    *,
    reference: str | None = None,
    calls: tuple[ToolCallOut, ...] = (),
    helper: FakeHelper | None = None,
) -> Grade:
    grader = parse_grader(spec)
    ctx = GradeContext(Answer(output, calls), reference, "the question", helper or FakeHelper())
    return asyncio.run(grader.grade(ctx))


def test_equals_contains_and_regex() -> None:
    assert grade({"type": "equals", "value": "Paris"}, " Paris\n").passed
    assert not grade({"type": "equals", "value": "Paris"}, "paris").passed
    assert grade({"type": "equals", "value": "Paris", "ignore_case": True}, "paris").passed
    assert grade({"type": "equals"}, "Paris", reference="Paris").passed  # the reference

    both = grade({"type": "contains", "value": ["Paris", "France"]}, "Paris is big")
    assert not both.passed and both.score == 0.5 and "France" in both.reason
    assert grade({"type": "icontains", "value": "PARIS"}, "paris").passed
    assert not grade({"type": "not-contains", "value": ["sorry", "cannot"]}, "I cannot").passed
    assert grade({"type": "not-icontains", "value": "SORRY"}, "Sure.").passed

    assert grade({"type": "regex", "pattern": r"\b\d{4}\b"}, "in 1889").reason == "matched '1889'"
    assert not grade({"type": "regex", "pattern": "^yes", "negate": True}, "yes!").passed
    assert grade({"type": "regex", "pattern": "^YES", "ignore_case": True}, "yes").passed


def test_json_and_schema() -> None:
    assert grade("is-json", '```json\n{"a": 1}\n```').passed  # a fenced answer counts
    assert not grade("is-json", "{a: 1}").passed
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    assert grade({"type": "json-schema", "schema": schema}, '{"n": 3}').passed
    wrong = grade({"type": "json-schema", "schema": schema}, '{"n": "3"}')
    assert not wrong.passed and wrong.reason.startswith("n: ")
    assert "not JSON" in grade({"type": "json-schema", "schema": schema}, "three").reason


def test_tool_call_names_the_tool_checks_arguments_and_offers_it() -> None:
    params = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    spec = {"type": "tool-call", "tool": "add", "parameters": params}
    assert parse_grader(spec).tool() == {
        "type": "function",
        "function": {"name": "add", "parameters": params},
    }
    assert grade(spec, calls=(ToolCallOut("add", '{"a": 1}'),)).passed
    assert "no call to add" in grade(spec, calls=(ToolCallOut("sub", "{}"),)).reason
    assert "not JSON" in grade(spec, calls=(ToolCallOut("add", "{a:"),)).reason
    assert "do not fit" in grade(spec, calls=(ToolCallOut("add", '{"a": "x"}'),)).reason
    assert not grade(
        {"type": "tool-call", "tool": "add"}, calls=(ToolCallOut("add", "[1]"),)
    ).passed


def test_expression_sees_the_answer_and_scores() -> None:
    spec = {"type": "expression", "value": 'json is not None and json["n"] > 2'}
    assert grade(spec, '{"n": 3}').passed
    assert not grade(spec, '{"n": 1}').passed
    assert not grade(spec, "nope").passed  # json is None: False, not an error
    assert grade({"type": "expression", "value": "words(output) <= 3"}, "one two").passed
    assert grade({"type": "expression", "value": 'search("^Hi", output)'}, "Hi there").passed
    scored = grade({"type": "expression", "value": "len(output) / 10"}, "abcdefg")
    assert scored.passed and scored.score == pytest.approx(0.7)
    assert not grade({"type": "expression", "value": "0.2", "threshold": 0.5}).passed
    ref = {"type": "expression", "value": "output.lower() == reference.lower()"}
    assert grade(ref, "PARIS", reference="paris").passed
    broken = grade({"type": "expression", "value": 'json["x"]'}, "not json")
    assert broken.error and not broken.passed and "expression failed" in broken.reason


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os').system('true')",
        "_x",
        "output.__class__",
        "output.__class__.__mro__[1].__subclasses__()",
        "().__class__.__bases__[0]",
        "'{0.__class__}'.format(output)",
        "output.format_map({})",
        "(lambda: 1)()",
        "(x := 1)",
        "open('/etc/passwd')",
        "eval('1')",
        "getattr(output, 'upper')",
        "import os",
        "x = 1",
    ],
)
def test_the_evaluator_refuses_escapes(expr: str) -> None:
    with pytest.raises(expression.ExpressionError):
        expression.evaluate(expr, {"output": "hi"})


def test_refused_expressions_are_suite_errors_and_attribute_whitelists_hold() -> None:
    with pytest.raises(GraderError) as caught:
        parse_grader({"type": "expression", "value": "output.__class__"})
    assert caught.value.problems[0][0] == "value" and "_" in caught.value.problems[0][1]
    # attributes beyond the plain methods of str, dict, list, ... fail at run time
    with pytest.raises(expression.ExpressionError):
        expression.evaluate("search.x", {})
    assert expression.evaluate("'a,b'.split(',')", {}) == ["a", "b"]
    assert expression.evaluate("'a' * 10", {}) == "a" * 10
    with pytest.raises(expression.ExpressionError):
        expression.evaluate("'a' * 10**9", {})  # no unbounded strings


def test_similarity_uses_the_server_embedder_and_a_threshold() -> None:
    assert DEFAULT_EMBEDDER == BUNDLED_EMBEDDER
    helper = FakeHelper()
    near = grade({"type": "similar", "value": "a cat"}, "the cat", helper=helper)
    assert near.passed and near.score == pytest.approx(1.0)
    assert helper.asked[0] == (BUNDLED_EMBEDDER, ["the cat", "a cat"])
    far = grade({"type": "embedding-similarity", "threshold": 0.9}, "a dog", reference="cat")
    assert not far.passed and far.score == pytest.approx(0.6) and "0.600" in far.reason
    failed = grade({"type": "similar", "value": "x"}, "y", helper=FakeHelper(fail=True))
    assert failed.error and "404" in failed.reason


def test_judge_renders_its_prompt_and_reads_verdicts_and_scores() -> None:
    helper = FakeHelper("PASS - it is right")
    spec = {"type": "llm-judge", "model": "judge", "prompt": "Q {{input}} A {{ output }}"}
    assert grade(spec, "Paris {{reference}}", reference="R", helper=helper).passed
    assert helper.asked[0] == (
        "judge",
        [{"role": "user", "content": "Q the question A Paris {{reference}}"}],
    )
    assert not grade(spec, "x", helper=FakeHelper("FAIL: wrong")).passed
    scored = grade(spec, "x", helper=FakeHelper("Score: 8/10"))
    assert scored.passed and scored.score == pytest.approx(0.8)
    low = grade({**spec, "threshold": 0.9}, "x", helper=FakeHelper("7"))
    assert not low.passed and low.score == pytest.approx(0.7)
    unclear = grade(spec, "x", helper=FakeHelper("Hmm."))
    assert unclear.error and "neither PASS/FAIL nor a score" in unclear.reason
    assert "503" in grade(spec, "x", helper=FakeHelper(fail=True)).reason

    assert parse_verdict("Verdict: FAILED") == (False, None)
    assert parse_verdict("0.25") == (None, 0.25)
    assert parse_verdict("score = 85") == (None, 0.85)
    assert (
        render("{{output}}|{{rubric}}", {"output": "{{rubric}}", "rubric": "r"}) == "{{rubric}}|r"
    )


@pytest.mark.parametrize(
    ("spec", "path", "words"),
    [
        ({"type": "nope"}, "type", "unknown grader"),
        ({"type": "contains"}, "value", "required"),
        ({"type": "contains", "value": "x", "extra": 1}, "extra", "not permitted"),
        ({"type": "regex", "pattern": "(unclosed"}, "pattern", "regular expression"),
        ({"type": "json-schema", "schema": {"type": "nonsense"}}, "schema", "JSON schema"),
        ({"type": "llm-judge", "model": "j", "prompt": "no placeholder"}, "prompt", "{{output}}"),
        ({"type": "llm-judge"}, "model", "required"),
        ({"type": "similar", "threshold": 2}, "threshold", "less than or equal"),
    ],
)
def test_bad_graders_name_the_field(spec: dict[str, Any], path: str, words: str) -> None:
    with pytest.raises(GraderError) as caught:
        parse_grader(spec)
    where, message = caught.value.problems[0]
    assert where == path and words in message, caught.value.problems
