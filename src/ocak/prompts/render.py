"""Checking and rendering a prompt version's messages: sandboxed Jinja2, declared variables.

Templates run in Jinja2's ``SandboxedEnvironment`` (no attributes starting with ``_``, no
unsafe callables) with ``StrictUndefined``, so a name the template uses but nobody gave
is an error rather than an empty string. Autoescape is off: these are chat messages,
not HTML. Every variable a template uses must be declared by its version (name, an
optional default, an optional type), checked when the version is created; the values a
caller gives are checked against the declarations before anything is rendered.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

import jinja2
from jinja2 import meta
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from ocak.errors import InvalidRequest

Role = Literal["system", "developer", "user", "assistant"]
VarType = Literal["string", "number", "integer", "boolean"]
ROLES: frozenset[str] = frozenset(get_args(Role))
VAR_TYPES: frozenset[str] = frozenset(get_args(VarType))

MAX_OUTPUT = 1_000_000  # characters one operator (``*``, ``**``) may produce in a template
_VAR_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str  # a Jinja2 template in a version; plain text once rendered

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True, slots=True)
class Variable:
    """One declared variable: without a default the caller must give it."""

    name: str
    type: VarType | None = None  # None: any JSON value
    default: Any = None
    has_default: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The canonical form stored and exported: only the keys that are set."""
        out: dict[str, Any] = {"name": self.name}
        if self.type is not None:
            out["type"] = self.type
        if self.has_default:
            out["default"] = self.default
        return out


class _Sandbox(SandboxedEnvironment):
    """The sandbox, also refusing ``*`` and ``**`` whose result would be huge."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(
        self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any
    ) -> Any:
        if operator == "**":
            if isinstance(right, int | float) and abs(right) > 64:
                raise SecurityError("the exponent is too large")
            return left**right
        sizes = [len(x) for x in (left, right) if isinstance(x, str | list | tuple)]
        counts = [x for x in (left, right) if isinstance(x, int) and not isinstance(x, bool)]
        if sizes and counts and sizes[0] * max(counts[0], 0) > MAX_OUTPUT:
            raise SecurityError("the repeated sequence is too long")
        return left * right


@functools.cache
def _env() -> SandboxedEnvironment:
    return _Sandbox(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)


@functools.lru_cache(maxsize=512)
def _template(source: str) -> jinja2.Template:
    return _env().from_string(source)


def parse_messages(messages: object) -> tuple[Message, ...]:
    """A non-empty list of ``{role, content}`` (dicts or ``Message``), checked field by field."""
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise InvalidRequest("A prompt needs a non-empty list of messages.", param="messages")
    out: list[Message] = []
    for i, message in enumerate(messages):
        role: object
        content: object
        if isinstance(message, Message):
            role, content = message.role, message.content
        elif isinstance(message, Mapping):
            extra = set(message) - {"role", "content"}
            if extra:
                raise InvalidRequest(
                    f"Unknown message field(s): {', '.join(sorted(map(str, extra)))}.",
                    param=f"messages.[{i}]",
                )
            role, content = message.get("role"), message.get("content")
        else:
            raise InvalidRequest("A message is an object {role, content}.", param=f"messages.[{i}]")
        if role not in ROLES:
            raise InvalidRequest(
                f"Invalid role {role!r}: use one of {', '.join(sorted(ROLES))}.",
                param=f"messages.[{i}].role",
            )
        if not isinstance(content, str):
            raise InvalidRequest(
                "A message's content is a string.", param=f"messages.[{i}].content"
            )
        out.append(Message(cast(Role, role), content))
    return tuple(out)


def parse_variables(variables: object) -> tuple[Variable, ...]:
    """Declarations, sorted by name, from ``{name: {type, default} | None}`` or a list of
    ``{name, type, default}`` (or ``Variable``); each default must have its declared type."""
    if variables is None:
        return ()
    items: list[tuple[str, object]] = []
    if isinstance(variables, Mapping):
        items = [(str(name), spec) for name, spec in variables.items()]
    elif isinstance(variables, Iterable) and not isinstance(variables, str):
        for i, spec in enumerate(variables):
            if isinstance(spec, Variable):
                items.append((spec.name, spec.to_dict()))
            elif isinstance(spec, Mapping) and isinstance(spec.get("name"), str):
                items.append((spec["name"], {k: v for k, v in spec.items() if k != "name"}))
            else:
                raise InvalidRequest(
                    "A variable is an object with a name.", param=f"variables.[{i}]"
                )
    else:
        raise InvalidRequest("Variables are a list or an object.", param="variables")
    out: dict[str, Variable] = {}
    for name, spec in items:
        param = f"variables.{name}"
        if not _VAR_NAME.fullmatch(name):
            raise InvalidRequest(
                f"Invalid variable name {name!r}: 1-64 letters, digits or '_', starting "
                "with a letter.",
                param=param,
            )
        if name in out:
            raise InvalidRequest(f"The variable '{name}' is declared twice.", param=param)
        spec = {} if spec is None else spec
        if not isinstance(spec, Mapping) or set(spec) - {"type", "default"}:
            raise InvalidRequest(
                "A variable's declaration has only 'type' and 'default'.", param=param
            )
        kind = spec.get("type")
        if kind is not None and kind not in VAR_TYPES:
            raise InvalidRequest(
                f"Invalid type {kind!r}: use one of {', '.join(sorted(VAR_TYPES))}.",
                param=f"{param}.type",
            )
        variable = Variable(name, kind, spec.get("default"), "default" in spec)
        if variable.has_default:
            _check_type(variable, variable.default, f"{param}.default")
        out[name] = variable
    return tuple(out[name] for name in sorted(out))


def check_templates(messages: Sequence[Message], variables: Sequence[Variable]) -> None:
    """Refuse, at creation, a template that does not parse or uses an undeclared name."""
    env = _env()
    declared = {v.name for v in variables} | set(env.globals)
    for i, message in enumerate(messages):
        param = f"messages.[{i}].content"
        try:
            used = meta.find_undeclared_variables(env.parse(message.content))
        except jinja2.TemplateSyntaxError as exc:
            raise InvalidRequest(
                f"Message {i} is not a valid template (line {exc.lineno}): {exc.message}",
                param=param,
            ) from exc
        unknown = sorted(used - declared)
        if unknown:
            raise InvalidRequest(
                f"Message {i} uses undeclared variable(s): {', '.join(unknown)}.", param=param
            )


def bind(variables: Sequence[Variable], given: Mapping[str, Any]) -> dict[str, Any]:
    """The values to render with: ``given`` checked against the declarations, defaults added."""
    declared = {v.name: v for v in variables}
    for name in given:
        if name not in declared:
            raise InvalidRequest(
                f"Unknown variable '{name}': the prompt declares {', '.join(declared) or 'none'}.",
                param=f"prompt.variables.{name}",
            )
    values: dict[str, Any] = {}
    for variable in variables:
        param = f"prompt.variables.{variable.name}"
        if variable.name in given:
            value = given[variable.name]
            _check_type(variable, value, param)
            values[variable.name] = value
        elif variable.has_default:
            values[variable.name] = variable.default
        else:
            raise InvalidRequest(f"Missing variable '{variable.name}'.", param=param)
    return values


def render_messages(
    messages: Sequence[Message], variables: Sequence[Variable], given: Mapping[str, Any]
) -> tuple[Message, ...]:
    """Each message's content rendered with the checked variables."""
    values = bind(variables, given)
    out: list[Message] = []
    for i, message in enumerate(messages):
        try:
            content = _template(message.content).render(values)
        except jinja2.TemplateError as exc:  # undefined names, sandbox refusals
            raise InvalidRequest(
                f"Cannot render message {i}: {exc}", param=f"messages.[{i}].content"
            ) from exc
        except Exception as exc:  # the template's own code failed (1 / 0, a bad filter arg)
            raise InvalidRequest(
                f"Cannot render message {i}: {type(exc).__name__}: {exc}",
                param=f"messages.[{i}].content",
            ) from exc
        out.append(Message(message.role, content))
    return tuple(out)


def _check_type(variable: Variable, value: object, param: str) -> None:
    if variable.type is None:
        return
    ok = {
        "string": isinstance(value, str),
        "boolean": isinstance(value, bool),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
    }[variable.type]
    if not ok:
        raise InvalidRequest(
            f"The variable '{variable.name}' must be a {variable.type}, not "
            f"{type(value).__name__}.",
            param=param,
        )
