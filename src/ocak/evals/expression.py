"""The ``expression`` grader's restricted evaluator: one Python-like expression over the
answer, evaluated by ``simpleeval`` (never Python's ``eval``).

What an expression may use (docs/evals.md):

- names: ``output`` (the answer's text), ``json`` (the output parsed as JSON, or None),
  ``reference`` (the case's reference answer, or None), ``input`` (the last user message),
  ``tool_calls`` (a list of ``{"name", "arguments"}``, arguments parsed when JSON),
  ``finish_reason``, ``prompt_tokens``, ``completion_tokens``, ``latency_ms``;
- functions: ``len int float str bool abs min max sum round any all sorted list tuple dict
  set``, ``search(pattern, text)`` (a regex search: True/False), ``words(text)`` (how many
  words);
- literals, arithmetic, comparisons, ``and``/``or``/``not``, ``x if c else y``, indexing,
  slicing, comprehensions, and the plain methods of str, int, float, list, dict, tuple and
  set (``output.lower()``, ``json.get("a")``).

Refused before anything runs: statements (imports, assignments), ``lambda``, any name or
attribute starting with ``_`` (``__class__``, ``__import__``), ``format``/``format_map``
(a way to reach attributes); at run time, attributes other than those plain methods.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from simpleeval import BASIC_ALLOWED_ATTRS, EvalWithCompoundTypes, InvalidExpression

MAX_LENGTH = 2000  # characters of one expression

NAMES = (
    "output",
    "json",
    "reference",
    "input",
    "tool_calls",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "latency_ms",
)

# Python constructs an expression may not contain, whatever simpleeval would do with them.
_REFUSED: dict[type[ast.AST], str] = {
    ast.Lambda: "lambda",
    ast.NamedExpr: "':=' (assignment)",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
    ast.Starred: "'*' unpacking",
}
_REFUSED_ATTRS = {"format", "format_map", "mro"}


class ExpressionError(ValueError):
    """An expression that may not run (checked when the suite loads)."""


def _search(pattern: str, text: str) -> bool:
    return re.search(str(pattern), str(text)) is not None


def _words(text: str) -> int:
    return len(str(text).split())


FUNCTIONS: dict[str, Any] = {
    "len": len,
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "abs": abs,
    "min": min,
    "max": max,
    "sum": sum,
    "round": round,
    "any": any,
    "all": all,
    "sorted": sorted,
    "search": _search,
    "words": _words,
}


def check(expr: str) -> None:
    """Raise ``ExpressionError`` unless ``expr`` is one expression the evaluator allows."""
    if len(expr) > MAX_LENGTH:
        raise ExpressionError(f"an expression may have at most {MAX_LENGTH} characters")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"not one valid expression: {exc.msg}") from None
    for node in ast.walk(tree):
        for kind, what in _REFUSED.items():
            if isinstance(node, kind):
                raise ExpressionError(f"{what} is not allowed in an expression")
        name = None
        if isinstance(node, ast.Name):
            name = node.id
        elif isinstance(node, ast.Attribute):
            name = node.attr
            if name in _REFUSED_ATTRS:
                raise ExpressionError(f"'.{name}' is not allowed in an expression")
        elif isinstance(node, ast.keyword):
            name = node.arg
        if name is not None and name.startswith("_"):
            raise ExpressionError(f"names starting with '_' are not allowed ({name!r})")


def evaluate(expr: str, names: dict[str, Any]) -> Any:
    """The value of ``expr`` with ``names``; ``ExpressionError`` for an expression that is
    refused or fails (a missing name, a type error on this answer, ...)."""
    check(expr)
    evaluator = EvalWithCompoundTypes(
        functions=dict(FUNCTIONS), names=dict(names), allowed_attrs=BASIC_ALLOWED_ATTRS
    )
    try:
        return evaluator.eval(expr.strip())
    except InvalidExpression as exc:
        raise ExpressionError(str(exc)) from None
    except (ArithmeticError, LookupError, TypeError, ValueError, AttributeError) as exc:
        raise ExpressionError(f"{type(exc).__name__}: {exc}") from None
    except RecursionError:
        raise ExpressionError("the expression nests too deeply") from None
