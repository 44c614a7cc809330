"""Turn a ``Constraint`` into an llguidance grammar, refusing what it cannot enforce.

llguidance (the grammar engine behind guidance, also used by llama.cpp and vLLM)
compiles JSON schemas and Lark grammars into token masks fast enough to apply
at every decoding step. Schemas are checked here, when the request arrives, so
an unsupported feature is a 400 that names it rather than a failure mid-stream.
"""

from __future__ import annotations

import copy
import functools
import json
from typing import Any

import llguidance as llg
from llguidance.gbnf_to_lark import gbnf_to_lark

from ocak.errors import InvalidRequest
from ocak.protocol.generation import Constraint

# Compact, conventional JSON: no free whitespace, so the model cannot pad forever.
JSON_OPTIONS: dict[str, Any] = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}
# A string the schema leaves unbounded is capped so an answer always completes.
DEFAULT_MAX_STRING = 256


def bound_strings(schema: Any, limit: int = DEFAULT_MAX_STRING) -> Any:
    """A copy of ``schema`` where free-form strings have a ``maxLength``.

    Output valid against the copy is valid against the original: the bound only
    narrows it. Strings with an enum, const, pattern or format are left alone.
    """
    schema = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if (
                node.get("type") == "string"
                and "maxLength" not in node
                and not {"enum", "const", "pattern", "format"} & node.keys()
            ):
                node["maxLength"] = limit
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(schema)
    return schema


@functools.lru_cache(maxsize=256)
def _compile(kind: str, text: str, param: str) -> str:
    if kind == "lark":
        grammar = llg.LLMatcher.grammar_from_lark(text)
    else:
        try:
            grammar = llg.LLMatcher.grammar_from_json_schema(text, defaults=JSON_OPTIONS)  # type: ignore[arg-type]
        except ValueError as exc:
            raise InvalidRequest(f"The JSON schema is not valid: {exc}", param=param) from exc
    is_error, messages = llg.LLMatcher.validate_grammar_with_warnings(grammar)
    if is_error:
        detail = messages[0] if messages else "invalid grammar"
        raise InvalidRequest(
            f"This schema uses a feature ocak cannot enforce: {detail}", param=param
        )
    return grammar


def compile_constraint(constraint: Constraint, *, param: str = "response_format") -> str:
    """The llguidance grammar for ``constraint``; a 400 naming ``param`` if unsupported."""
    if constraint.kind == "lark":
        if not constraint.grammar:
            raise InvalidRequest("A grammar constraint needs a grammar.", param=param)
        return _compile("lark", constraint.grammar, param)
    schema = constraint.schema if constraint.schema is not None else {"type": "object"}
    if not isinstance(schema, dict):
        raise InvalidRequest("The JSON schema must be an object.", param=param)
    return _compile("json", json.dumps(bound_strings(schema)), param)


def gbnf_constraint(gbnf: Any, *, param: str = "grammar") -> Constraint | None:
    """A GBNF grammar (llama.cpp's and KoboldCpp's ``grammar`` field) as a Lark constraint,
    checked now: a grammar that does not parse is a 400 naming ``param``. Empty: none."""
    if gbnf is None or gbnf == "":
        return None
    if not isinstance(gbnf, str):
        raise InvalidRequest("The grammar must be a GBNF string.", param=param)
    try:
        lark = gbnf_to_lark(gbnf)
        constraint = Constraint(kind="lark", grammar=lark, param=param)
        compile_constraint(constraint, param=param)
    except InvalidRequest:
        raise
    except Exception as exc:  # llguidance's converter raises bare Exceptions too (no root)
        raise InvalidRequest(f"The grammar is not valid GBNF: {exc}", param=param) from None
    return constraint
