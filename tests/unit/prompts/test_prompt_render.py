"""Rendering: declared variables, defaults, checks named in errors, syntax, the sandbox."""

from __future__ import annotations

from typing import Any

import pytest

from ocak.errors import InvalidRequest
from ocak.prompts.render import (
    Message,
    Variable,
    bind,
    check_templates,
    parse_messages,
    parse_variables,
    render_messages,
)

MESSAGES = parse_messages(
    [
        {"role": "system", "content": "You are {{ persona }}. Answer in {{ language }}."},
        {"role": "user", "content": "{% for q in questions %}- {{ q }}\n{% endfor %}n={{ n }}"},
    ]
)
VARIABLES = parse_variables(
    {
        "persona": {"type": "string"},
        "language": {"type": "string", "default": "English"},
        "questions": None,
        "n": {"type": "integer", "default": 1},
    }
)


def render(given: dict[str, Any]) -> tuple[Message, ...]:
    return render_messages(MESSAGES, VARIABLES, given)


def test_renders_with_values_and_defaults() -> None:
    out = render({"persona": "a pirate", "questions": ["why?", "how?"]})
    assert out[0] == Message("system", "You are a pirate. Answer in English.")
    assert out[1] == Message("user", "- why?\n- how?\nn=1")
    assert render({"persona": "x", "language": "Turkish", "questions": [], "n": 3})[0].content == (
        "You are x. Answer in Turkish."
    )


def test_declarations_are_sorted_and_canonical() -> None:
    assert [v.name for v in VARIABLES] == ["language", "n", "persona", "questions"]
    assert VARIABLES[0].to_dict() == {"name": "language", "type": "string", "default": "English"}
    assert VARIABLES[3] == Variable("questions")
    as_list = parse_variables([v.to_dict() for v in VARIABLES])
    assert as_list == VARIABLES


@pytest.mark.parametrize(
    ("given", "param"),
    [
        ({"questions": []}, "prompt.variables.persona"),  # missing, no default
        ({"persona": "x", "questions": [], "tone": "dry"}, "prompt.variables.tone"),  # extra
        ({"persona": 3, "questions": []}, "prompt.variables.persona"),  # wrong type
        ({"persona": "x", "questions": [], "n": 1.5}, "prompt.variables.n"),
        ({"persona": "x", "questions": [], "n": True}, "prompt.variables.n"),  # bool is no int
    ],
)
def test_bad_variables_are_named(given: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        render(given)
    assert info.value.param == param


def test_types() -> None:
    decl = parse_variables({"x": {"type": "number"}, "b": {"type": "boolean"}})
    assert bind(decl, {"x": 2, "b": False}) == {"x": 2, "b": False}
    assert bind(decl, {"x": 2.5, "b": True})["x"] == 2.5
    with pytest.raises(InvalidRequest) as info:
        bind(decl, {"x": 1, "b": "yes"})
    assert info.value.param == "prompt.variables.b"


@pytest.mark.parametrize(
    ("spec", "param"),
    [
        ({"x": {"type": "float"}}, "variables.x.type"),
        ({"x": {"type": "integer", "default": "one"}}, "variables.x.default"),
        ({"x": {"required": True}}, "variables.x"),
        ({"1x": None}, "variables.1x"),
        ([{"name": "x"}, {"name": "x"}], "variables.x"),
    ],
)
def test_bad_declarations(spec: object, param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_variables(spec)
    assert info.value.param == param


def test_bad_messages() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_messages([{"role": "user", "content": "hi"}, {"role": "tool", "content": "x"}])
    assert info.value.param == "messages.[1].role"
    with pytest.raises(InvalidRequest) as info:
        parse_messages([])
    assert info.value.param == "messages"
    with pytest.raises(InvalidRequest) as info:
        parse_messages([{"role": "user", "content": 3}])
    assert info.value.param == "messages.[0].content"


def test_syntax_error_names_the_message() -> None:
    messages = parse_messages(
        [{"role": "system", "content": "fine"}, {"role": "user", "content": "{{ oops"}]
    )
    with pytest.raises(InvalidRequest) as info:
        check_templates(messages, ())
    assert info.value.param == "messages.[1].content"


def test_undeclared_name_is_refused_at_creation() -> None:
    messages = parse_messages([{"role": "user", "content": "{{ who }} {{ range(2) | list }}"}])
    with pytest.raises(InvalidRequest) as info:
        check_templates(messages, ())
    assert info.value.param == "messages.[0].content"
    assert "who" in info.value.message
    check_templates(messages, parse_variables({"who": None}))  # globals like range are fine


def test_strict_undefined_at_render() -> None:
    messages = parse_messages([{"role": "user", "content": "{{ user.name }}"}])
    decl = parse_variables({"user": None})
    assert render_messages(messages, decl, {"user": {"name": "Ada"}})[0].content == "Ada"
    with pytest.raises(InvalidRequest) as info:
        render_messages(messages, decl, {"user": {}})
    assert info.value.param == "messages.[0].content"


class Secret:
    _private = "hidden"


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ x._private }}",
        "{{ 'a' * 100000000 }}",
        "{{ 9 ** 999999 }}",
    ],
)
def test_sandbox_refuses(template: str) -> None:
    messages = parse_messages([{"role": "user", "content": template}])
    decl = parse_variables({"x": None})
    check_templates(messages, decl)
    with pytest.raises(InvalidRequest) as info:
        render_messages(messages, decl, {"x": Secret()})
    assert info.value.param == "messages.[0].content"


def test_no_autoescape_and_template_errors_translated() -> None:
    messages = parse_messages([{"role": "user", "content": "<b>{{ x }}</b> & {{ 1 // y }}"}])
    decl = parse_variables({"x": None, "y": {"type": "integer"}})
    assert render_messages(messages, decl, {"x": "<i>", "y": 1})[0].content == "<b><i></b> & 1"
    with pytest.raises(InvalidRequest) as info:
        render_messages(messages, decl, {"x": "", "y": 0})
    assert "ZeroDivisionError" in info.value.message
