"""What the prompt store holds and returns, and the checks and hash a version's content gets.

A version's ``sha256`` is that of its canonical JSON (messages, variables, model, params;
not its note or time), so the same content always has the same hash, whether it comes
from ``PromptStore.create`` or from an import.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ocak.errors import InvalidRequest
from ocak.prompts.render import (
    Message,
    Variable,
    check_templates,
    parse_messages,
    parse_variables,
)

LATEST = "latest"  # a label every prompt has: its newest version
_PROMPT_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_LABEL = re.compile(r"[a-z][a-z0-9_-]{0,31}")


@dataclass(frozen=True, slots=True)
class Version:
    prompt: str
    version: int
    messages: tuple[Message, ...]
    variables: tuple[Variable, ...]
    model: str | None
    params: Mapping[str, Any]
    note: str | None
    sha256: str
    created_at: float

    def content(self) -> dict[str, Any]:
        """What the sha256 covers, in canonical form."""
        return content_of(self.messages, self.variables, self.model, self.params)

    def to_dict(self) -> dict[str, Any]:
        """The exported form (also what ``diff`` compares)."""
        return {
            "version": self.version,
            **self.content(),
            "note": self.note,
            "created_at": self.created_at,
            "sha256": self.sha256,
        }


@dataclass(frozen=True, slots=True)
class PromptInfo:
    id: str
    description: str | None
    latest: int
    labels: dict[str, int]
    created_at: float


@dataclass(frozen=True, slots=True)
class Rendered:
    prompt: str
    version: int
    messages: tuple[Message, ...]
    model: str | None
    params: Mapping[str, Any]

    def chat_messages(self) -> list[dict[str, str]]:
        return [m.to_dict() for m in self.messages]


@dataclass(frozen=True, slots=True)
class ImportResult:
    prompts_created: int = 0
    versions_added: int = 0
    versions_unchanged: int = 0
    labels_set: int = 0  # labels created or moved
    added: tuple[tuple[str, int], ...] = field(default=())  # (prompt, version) written


def checked(
    messages: object, variables: object, model: object, params: object
) -> tuple[tuple[Message, ...], tuple[Variable, ...], dict[str, Any]]:
    """Messages, declarations and params checked; templates parsed against the declarations."""
    msgs, decl = parse_messages(messages), parse_variables(variables)
    check_templates(msgs, decl)
    if model is not None and (not isinstance(model, str) or not model):
        raise InvalidRequest("A model is a non-empty string.", param="model")
    return msgs, decl, _check_params(params)


def _check_params(params: object) -> dict[str, Any]:
    if params is None:
        return {}
    if not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params):
        raise InvalidRequest("Params are an object.", param="params")
    for name, value in params.items():
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if name in ("temperature", "top_p") and not (number and math.isfinite(value)):
            raise InvalidRequest(f"'{name}' must be a number.", param=f"params.{name}")
        if name == "max_tokens" and not (number and isinstance(value, int) and value >= 1):
            raise InvalidRequest(
                "'max_tokens' must be a positive integer.", param="params.max_tokens"
            )
    try:
        return dict(json.loads(json.dumps(dict(params), allow_nan=False)))
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"Params must be JSON: {exc}", param="params") from exc


def content_of(
    messages: Sequence[Message],
    variables: Sequence[Variable],
    model: str | None,
    params: Mapping[str, Any],
) -> dict[str, Any]:
    return {
        "messages": [m.to_dict() for m in messages],
        "variables": [v.to_dict() for v in variables],
        "model": model,
        "params": dict(params),
    }


def canonical(obj: object) -> str:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def sha256_of(content: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(content).encode()).hexdigest()


def check_id(prompt_id: object) -> None:
    if not isinstance(prompt_id, str) or not _PROMPT_ID.fullmatch(prompt_id):
        raise InvalidRequest(
            f"Invalid prompt id {prompt_id!r}: 1-64 lowercase letters, digits, '.', '_' or "
            "'-', starting with a letter or digit.",
            param="prompt",
        )


def check_label(label: object) -> None:
    if not isinstance(label, str) or not _LABEL.fullmatch(label) or label == LATEST:
        raise InvalidRequest(
            f"Invalid label {label!r}: 1-32 lowercase letters, digits, '_' or '-', starting "
            f"with a letter, and not '{LATEST}' (which always means the newest version).",
            param="label",
        )
