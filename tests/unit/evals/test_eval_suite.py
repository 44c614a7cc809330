"""Reading eval suites: the targets (models × prompt versions), inline cases and cases
from chat-format JSONL (an exported traffic file), the request each case makes, the
suite's hash, and every problem reported with where it is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from ocak.evals.suite import SuiteError, load_suite, parse_suite


def suite_from(tmp_path: Path, data: Any) -> Any:
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return load_suite(path)


def problems(tmp_path: Path, data: Any) -> str:
    with pytest.raises(SuiteError) as caught:
        suite_from(tmp_path, data)
    return caught.value.message


HI = [{"role": "user", "content": "Hi"}]


def test_targets_are_models_times_prompts_and_cases_make_requests(tmp_path: Path) -> None:
    suite = suite_from(
        tmp_path,
        {
            "name": "greetings",
            "models": ["alpha", "beta"],
            "prompts": [{"id": "npc", "version": 2}, {"id": "npc", "label": "staging"}],
            "defaults": {"temperature": 0.2, "max_tokens": 20},
            "cases": [
                {
                    "name": "bram",
                    "variables": {"npc": "Bram"},
                    "params": {"max_tokens": 5},
                    "assert": [{"type": "tool-call", "tool": "wave"}],
                }
            ],
            "assert": [{"type": "not-contains", "value": "As an AI"}],
        },
    )
    assert [t.id for t in suite.targets] == [
        "alpha + npc@2",
        "alpha + npc@staging",
        "beta + npc@2",
        "beta + npc@staging",
    ]
    assert (suite.repeats, suite.threshold, suite.concurrency) == (5, 1.0, 4)
    (case,) = suite.cases
    assert [g.describe() for g in case.graders] == ["tool-call wave", "not-contains 'As an AI'"]
    body = case.request(suite.targets[1])
    assert body == {
        "temperature": 0.2,
        "max_tokens": 5,  # the case's params over the defaults
        "model": "alpha",
        "prompt": {"id": "npc", "label": "staging", "variables": {"npc": "Bram"}},
        "tools": [
            {"type": "function", "function": {"name": "wave", "parameters": {"type": "object"}}}
        ],
        "stream": False,
    }


def test_prompts_alone_leave_the_model_to_the_version(tmp_path: Path) -> None:
    suite = suite_from(
        tmp_path,
        {"name": "p", "prompts": [{"id": "npc"}], "cases": [{"variables": {"a": 1}}]},
    )
    (target,) = suite.targets
    assert target.id == "npc" and suite.cases[0].name == "case-1"
    assert suite.cases[0].request(target) == {
        "prompt": {"id": "npc", "variables": {"a": 1}},
        "stream": False,
    }


def test_a_cases_file_becomes_cases_with_references_and_the_suite_asserts(
    tmp_path: Path,
) -> None:
    lines = [
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Capital of France?"},
                {"role": "assistant", "content": "Paris."},
            ],
            "metadata": {"request_id": "req-1", "model": "default"},
        },
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]},
        {  # an answer that was a tool call, as `ocak usage export` writes it
            "messages": [
                {"role": "user", "content": "1+2?"},
                {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]},
            ],
            "tools": [{"type": "function", "function": {"name": "add"}}],
        },
    ]
    (tmp_path / "traffic.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    suite = suite_from(
        tmp_path,
        {
            "name": "replay",
            "models": "alpha",
            "cases_file": "traffic.jsonl",
            "assert": [{"type": "not-icontains", "value": "as an ai"}],
        },
    )
    assert [c.name for c in suite.cases] == ["req-1", "traffic:2", "traffic:3"]
    tool = suite.cases[2]
    assert tool.reference is None and tool.params == {"tools": lines[2]["tools"]}
    first = suite.cases[0]
    assert first.reference == "Paris." and first.input == "Capital of France?"
    assert first.request(suite.targets[0])["messages"] == lines[0]["messages"][:2]
    assert suite.cases[1].input == "Hello" and suite.cases[1].reference is None
    # ... and a grader that needs a reference says which line has none
    (tmp_path / "suite.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "r",
                "models": ["a"],
                "cases_file": ["traffic.jsonl"],
                "assert": [{"type": "equals"}],
            }
        )
    )
    with pytest.raises(SuiteError) as caught:
        load_suite(tmp_path / "suite.yaml")
    message = caught.value.message
    assert "traffic.jsonl line 2: grader 'equals reference' compares with a reference" in message
    assert "traffic.jsonl line 3: grader" in message and "line 1:" not in message


def test_every_problem_is_reported_with_its_path(tmp_path: Path) -> None:
    message = problems(
        tmp_path,
        {
            "name": "bad",
            "models": ["a"],
            "repeats": 0,
            "colour": "blue",
            "defaults": {"stream": True},
            "cases": [
                {"name": "one", "messages": [{"role": "robot", "content": "x"}]},
                {"name": "one", "messages": HI, "assert": [{"type": "contains"}]},
                {"messages": HI, "assert": [{"type": "regex", "pattern": "("}]},
                {"name": "nomsg"},
            ],
        },
    )
    for expected in (
        "repeats: Input should be greater than or equal to 1",
        "colour: Extra inputs are not permitted",
        "cases[0].messages[0].role: Input should be",
    ):
        assert expected in message, message
    # the pydantic errors come first; fix them and the rest are named as well
    message = problems(
        tmp_path,
        {
            "name": "bad",
            "models": ["a", "a"],
            "defaults": {"stream": True},
            "cases": [
                {"name": "one", "messages": HI},
                {"name": "one", "messages": HI, "assert": [{"type": "contains"}]},
                {"messages": HI, "assert": [{"type": "regex", "pattern": "("}]},
                {"name": "nomsg", "variables": {"x": 1}},
            ],
        },
    )
    for expected in (
        "defaults.stream: set by ocak eval itself",
        "cases[1].name: another case is named 'one'",
        "cases[1].assert[0].value: Field required",
        "cases[2].assert[0].pattern: Value error, not a valid regular expression",
        "cases[3].messages: a case needs messages",
        "cases[3].variables: variables fill a registry prompt",
        "models: 'a' is listed twice",
    ):
        assert expected in message, message


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("name: x\n  models: [a\n", "not valid YAML at line"),
        ("- a\n- b\n", "must be a mapping"),
        ({"name": "x", "cases": [{"messages": HI}]}, "models: give at least one model"),
        ({"name": "x", "models": ["a"]}, "cases: a suite needs cases"),
        ({"name": "x", "models": ["a"], "cases_file": "missing.jsonl"}, "cannot read it"),
        (
            {
                "name": "x",
                "models": ["a"],
                "prompts": [{"id": "p", "version": 1, "label": "l"}],
                "cases": [{"variables": {}}],
            },
            "prompts[0]: Value error, give a prompt's version or its label, not both",
        ),
    ],
)
def test_unusable_suites_say_why(tmp_path: Path, text: Any, words: str) -> None:
    assert words in problems(tmp_path, text)


def test_bad_jsonl_lines_are_named(tmp_path: Path) -> None:
    (tmp_path / "t.jsonl").write_text(
        '{"messages": [{"role": "user", "content": "ok"}]}\nnot json\n{"text": "x"}\n'
        '{"messages": [{"role": "assistant", "content": "only an answer"}]}\n'
        '{"messages": [{"role": "wizard", "content": "x"}]}\n'
    )
    message = problems(tmp_path, {"name": "x", "models": ["a"], "cases_file": "t.jsonl"})
    assert "t.jsonl line 2: not JSON" in message
    assert 't.jsonl line 3: not a chat line: expected {"messages": [...]}' in message
    assert "t.jsonl line 4: no messages left to send" in message
    assert "t.jsonl line 5.messages[0].role" in message


def test_the_hash_follows_what_decides_the_samples(tmp_path: Path) -> None:
    base = {"name": "h", "models": ["a"], "cases": [{"name": "c", "messages": HI}]}

    def digest(**changes: Any) -> str:
        return parse_suite({**base, **changes}, tmp_path / "s.yaml").hash

    same = digest()
    assert digest(threshold=0.5, concurrency=9) == same  # may change between a run and its resume
    assert digest(repeats=3) != same
    assert digest(models=["b"]) != same
    assert digest(cases=[{"name": "c", "messages": HI, "assert": ["is-json"]}]) != same
