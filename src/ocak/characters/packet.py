"""A character's turn as a packet: the schema the model writes, and its validation.

The model writes the *wire* packet, constrained to ``wire_schema(card)``:

    {"text": "...", "narration": "...", "emotion": {"label": "joy", "strength": 0-10},
     "actions": [{"name": "give_item", "parameters": {...}}],
     "relationship": {"trust": -5..5, "respect": -5..5, "familiarity": 0..5}}

``text`` comes first so it can be streamed while the rest is written. Every
string is bounded, so the packet always completes within
``packet_token_bound(card)`` tokens. ``parse_packet`` validates the result
against the card's declared schemas (not the tightened copy the decoder got)
and moves stage directions out of ``text``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator

from ocak.characters.cards import Character
from ocak.characters.directions import split_directions
from ocak.characters.relationship import DIMENSIONS, MAX_STEP
from ocak.errors import OcakError

NARRATION_MAX = 100


def narration_max(card: Character) -> int:
    """The narration's bound: 100 characters, or the text's own when that is shorter."""
    return min(NARRATION_MAX, card.text_max_chars)


MAX_ACTIONS = 2
STRENGTH_MAX = 10
DEFAULT_STRING_MAX = 60
DEFAULT_ARRAY_MAX = 4


class NoValidPacket(OcakError):
    """The serving model produced no valid packet, even after one retry."""

    status = 502
    type = "server_error"
    code = "no_valid_packet"


class PacketError(ValueError):
    """One attempt's output is not a valid packet (the reason says why)."""


def bounded(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of a parameters schema in which every string and array has a length bound."""
    out = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if not isinstance(node, dict):
            return
        kind = node.get("type")
        if kind == "string" and "maxLength" not in node and "enum" not in node:
            if "const" not in node:
                node["maxLength"] = DEFAULT_STRING_MAX
        elif kind == "array":
            node.setdefault("maxItems", DEFAULT_ARRAY_MAX)
            walk(node.get("items"))
        elif kind == "object":
            node.setdefault("additionalProperties", False)
            for sub in (node.get("properties") or {}).values():
                walk(sub)

    walk(out)
    return out


def _delta(low: int, high: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": low, "maximum": high}


def wire_schema(card: Character, *, for_decoding: bool = True) -> dict[str, Any]:
    """The JSON schema of the packet the model writes for ``card``.

    ``for_decoding`` tightens the action parameter schemas (bounded strings and
    arrays, no extra properties); validation uses the card's own schemas.
    """
    props: dict[str, Any] = {
        "text": {"type": "string", "minLength": 1, "maxLength": card.text_max_chars},
        "narration": {"type": "string", "maxLength": narration_max(card)},
        "emotion": {
            "type": "object",
            "properties": {
                "label": {"type": "string", "enum": list(card.emotions)},
                "strength": {"type": "integer", "minimum": 0, "maximum": STRENGTH_MAX},
            },
            "required": ["label", "strength"],
            "additionalProperties": False,
        },
    }
    if card.actions:
        variants = [
            {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "enum": [a.name]},
                    "parameters": bounded(a.parameters) if for_decoding else a.parameters,
                },
                "required": ["name", "parameters"],
                "additionalProperties": False,
            }
            for a in card.actions
        ]
        items = variants[0] if len(variants) == 1 else {"anyOf": variants}
        props["actions"] = {"type": "array", "items": items, "maxItems": MAX_ACTIONS}
    props["relationship"] = {
        "type": "object",
        "properties": {
            "trust": _delta(-MAX_STEP, MAX_STEP),
            "respect": _delta(-MAX_STEP, MAX_STEP),
            "familiarity": _delta(0, MAX_STEP),
        },
        "required": ["trust", "respect", "familiarity"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": props,
        "required": list(props),
        "additionalProperties": False,
    }


def _string_bound(node: dict[str, Any]) -> int:
    if "enum" in node:
        return max((len(json.dumps(v)) for v in node["enum"]), default=4)
    if "const" in node:
        return len(json.dumps(node["const"]))
    kind = node.get("type")
    if kind == "string":
        return int(node.get("maxLength", DEFAULT_STRING_MAX)) + 2
    if kind in ("integer", "number"):
        return 24
    if kind == "boolean":
        return 5
    if kind == "array":
        items = node.get("items") if isinstance(node.get("items"), dict) else {}
        n = int(node.get("maxItems", DEFAULT_ARRAY_MAX))
        return 2 + n * (_string_bound(items or {}) + 2)
    if kind == "object":
        props = node.get("properties") or {}
        return 2 + sum(len(k) + 4 + _string_bound(v) for k, v in props.items())
    return 24


def packet_token_bound(card: Character) -> int:
    """Tokens a packet can take at most (a token carries at least one character)."""
    chars = card.text_max_chars + narration_max(card) + 160  # keys, emotion, relationship
    if card.actions:
        per = max(len(a.name) + 30 + _string_bound(bounded(a.parameters)) for a in card.actions)
        chars += MAX_ACTIONS * per
    return chars


@dataclass(slots=True)
class ParsedPacket:
    """A validated packet, with stage directions moved out of ``text``."""

    text: str
    narration: str
    emotion: str
    strength: float
    actions: list[dict[str, Any]] = field(default_factory=list)
    change: dict[str, int] = field(default_factory=dict)

    def wire(self, card: Character) -> dict[str, Any]:
        """The packet as the model writes it for ``card`` (its history next turn)."""
        out: dict[str, Any] = {
            "text": self.text,
            "narration": self.narration,
            "emotion": {"label": self.emotion, "strength": round(self.strength * STRENGTH_MAX)},
        }
        if card.actions:
            out["actions"] = self.actions
        out["relationship"] = {d: int(self.change.get(d, 0)) for d in DIMENSIONS}
        return out


def _first_error(validator: Draft202012Validator, data: Any) -> str | None:
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.path))
    if not errors:
        return None
    err = errors[0]
    where = "/".join(str(p) for p in err.path) or "(packet)"
    return f"{where}: {err.message}"


def parse_packet(raw: str, card: Character) -> ParsedPacket:
    """Validate one attempt's output against the card; ``PacketError`` says why not."""
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise PacketError(f"not JSON ({exc.msg} at character {exc.pos})") from exc
    if not isinstance(data, dict):
        raise PacketError("not a JSON object")
    data.setdefault("actions", [])
    schema = wire_schema(card, for_decoding=False)
    if not card.actions:
        schema["properties"]["actions"] = {"type": "array", "maxItems": 0}
    problem = _first_error(Draft202012Validator(schema), data)
    if problem is not None:
        raise PacketError(problem)
    spoken, directions = split_directions(data["text"])
    narration = "; ".join(p for p in [*directions, data["narration"].strip()] if p)
    actions = [{"name": a["name"], "parameters": a["parameters"]} for a in data["actions"]]
    return ParsedPacket(
        text=spoken,
        narration=narration,
        emotion=data["emotion"]["label"],
        strength=data["emotion"]["strength"] / STRENGTH_MAX,
        actions=actions,
        change={k: int(v) for k, v in data["relationship"].items()},
    )
