"""The character card: who a character is, what it may feel and do, which model serves it.

A card is written in YAML or JSON (ocak's own format, below) or imported from a
SillyTavern ``chara_card_v2`` (see ``tavern``). Action parameters are JSON
schemas limited to what constrained decoding supports (``SCHEMA_KEYWORDS``);
anything else is refused with a message naming the keyword.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ocak.errors import InvalidRequest

# The fixed set a character's emotions come from (after Inworld's emotion labels).
EMOTIONS: tuple[str, ...] = (
    "neutral",
    "joy",
    "sadness",
    "anger",
    "fear",
    "surprise",
    "disgust",
    "contempt",
    "affection",
    "interest",
    "humor",
    "tension",
    "criticism",
    "defensiveness",
    "validation",
)

# JSON-schema keywords allowed in action parameters: what llguidance compiles and
# ``jsonschema`` checks alike.
SCHEMA_KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "enum",
        "const",
        "items",
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "description",
        "title",
        "default",
    }
)

ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
ACTION_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,47}$"
EMPTY_OBJECT: dict[str, Any] = {"type": "object", "properties": {}}


class CardError(InvalidRequest):
    """A card that cannot be read or does not validate; the message names the field."""


def _check_schema_keywords(schema: Any, where: str) -> None:
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise ValueError(f"{where} must be a JSON schema object")
    for key, value in schema.items():
        if key not in SCHEMA_KEYWORDS:
            raise ValueError(
                f"{where} uses the JSON-schema keyword '{key}', which constrained decoding "
                f"does not support (supported: {', '.join(sorted(SCHEMA_KEYWORDS))})"
            )
        if key == "properties" and isinstance(value, dict):
            for name, sub in value.items():
                _check_schema_keywords(sub, f"{where}.properties.{name}")
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            _check_schema_keywords(value, f"{where}.{key}")


class ActionSpec(BaseModel):
    """Something a character may do in the game, e.g. ``give_item {item}``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=ACTION_PATTERN, description="The action's name, e.g. give_item.")
    description: str = Field("", max_length=500, description="When the character takes it.")
    parameters: dict[str, Any] = Field(
        default_factory=lambda: dict(EMPTY_OBJECT),
        description="JSON schema (type object) of the action's parameters.",
    )

    @field_validator("parameters")
    @classmethod
    def _schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("type") != "object":
            raise ValueError("parameters must be a JSON schema with type 'object'")
        _check_schema_keywords(value, "parameters")
        try:
            Draft202012Validator.check_schema(value)
        except SchemaError as exc:
            raise ValueError(f"parameters is not a valid JSON schema: {exc.message}") from exc
        return value


class LoreEntry(BaseModel):
    """A lorebook entry: ``content`` enters the prompt when a key appears in recent messages."""

    model_config = ConfigDict(extra="ignore")

    keys: list[str] = Field(default_factory=list, description="Words that activate it.")
    content: str = Field(max_length=8000)
    name: str | None = None
    secondary_keys: list[str] = Field(default_factory=list)
    selective: bool = Field(False, description="Also needs one of secondary_keys.")
    constant: bool = Field(False, description="Always active.")
    enabled: bool = True
    case_sensitive: bool = False
    whole_words: bool = Field(True, description="Keys match whole words only.")
    insertion_order: int = Field(100, description="Lower comes first in the prompt.")
    priority: int = Field(10, description="Under the token budget, higher is kept first.")


class Lorebook(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str | None = None
    entries: list[LoreEntry] = Field(default_factory=list, max_length=1000)
    scan_depth: int = Field(4, ge=1, le=100, description="Recent messages scanned for keys.")
    token_budget: int = Field(256, ge=16, le=4096, description="Most tokens of lore per turn.")


class VoiceSpec(BaseModel):
    """How a character sounds: which engine and voice speak it, and how fast."""

    model_config = ConfigDict(extra="forbid")

    engine: str = Field("piper", pattern=r"^piper$", description="The speech engine (piper).")
    id: str | None = Field(
        None, min_length=1, max_length=100, description="The voice (default: the server's first)."
    )
    speed: float = Field(1.0, ge=0.5, le=2.0, description="Speaking rate; 2 is twice as fast.")
    emotional: bool = Field(True, description="Emotions change the rate and liveliness.")


def _as_list(value: Any) -> Any:
    if isinstance(value, str):
        return [line.strip("-• ").strip() for line in value.splitlines() if line.strip()]
    return value


class Character(BaseModel):
    """A character card in ocak's format."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=ID_PATTERN, description="Stable id: lowercase letters, digits, _ -.")
    name: str = Field(min_length=1, max_length=100)
    persona: str = Field(min_length=1, max_length=8000, description="Who the character is.")
    backstory: str = Field("", max_length=8000)
    speaking_style: str = Field("", max_length=4000)
    knowledge: Annotated[list[str], Field(max_length=100)] = Field(default_factory=list)
    goals: Annotated[list[str], Field(max_length=50)] = Field(default_factory=list)
    emotions: list[str] = Field(
        default_factory=lambda: list(EMOTIONS),
        description=f"Emotions it may show, from: {', '.join(EMOTIONS)}.",
    )
    actions: list[ActionSpec] = Field(default_factory=list, max_length=32)
    model: str = Field(
        "default", min_length=1, description="The ocak model (or, with the gateway, alias)."
    )
    greeting: str | None = Field(None, max_length=4000, description="First line of a session.")
    lorebook: Lorebook | None = None
    knowledge_bases: list[str] = Field(
        default_factory=list,
        max_length=8,
        description="Knowledge bases searched by meaning for what the player says (beside the "
        "lorebook's keywords): the best chunks enter the prompt as lore.",
    )
    text_max_chars: int = Field(200, ge=20, le=2000, description="Longest spoken text.")
    temperature: float = Field(0.8, ge=0.0, le=2.0)
    voice: VoiceSpec | None = Field(None, description="How the character sounds when voiced.")

    _lists = field_validator("knowledge", "goals", mode="before")(_as_list)

    @field_validator("emotions")
    @classmethod
    def _emotions(cls, value: list[str]) -> list[str]:
        labels = [v.strip().lower() for v in value]
        unknown = [v for v in labels if v not in EMOTIONS]
        if unknown:
            raise ValueError(f"unknown emotion(s) {unknown}; choose from {', '.join(EMOTIONS)}")
        if not labels:
            raise ValueError("at least one emotion is needed (neutral, for instance)")
        return list(dict.fromkeys(labels))

    @model_validator(mode="after")
    def _unique_actions(self) -> Character:
        names = [a.name for a in self.actions]
        if len(set(names)) != len(names):
            raise ValueError("two actions share a name")
        return self

    def action(self, name: str) -> ActionSpec | None:
        return next((a for a in self.actions if a.name == name), None)


def slug(name: str) -> str:
    """An id made from a display name: ``"Old Bram"`` -> ``"old-bram"``."""
    text = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return (text or "character")[:64]


def describe(exc: ValidationError, where: str = "") -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        parts.append(f"{where}{loc}: {err['msg']}")
    return "; ".join(parts)


def card_from_data(data: Any, *, source: str = "", card_id: str | None = None) -> Character:
    """A card from parsed YAML/JSON: ocak's format, or a SillyTavern v1/v2 card."""
    from ocak.characters.tavern import is_tavern_card, tavern_to_character

    where = f"{source}: " if source else ""
    if not isinstance(data, dict):
        raise CardError(f"{where}a character card must be a mapping")
    if is_tavern_card(data):
        return tavern_to_character(data, card_id=card_id, source=source)
    if card_id is not None:
        data = {**data, "id": card_id}
    elif "id" not in data and isinstance(data.get("name"), str):
        data = {**data, "id": slug(data["name"])}
    try:
        return Character.model_validate(data)
    except ValidationError as exc:
        raise CardError(where + describe(exc)) from exc


def parse_card_bytes(raw: bytes, *, filename: str = "", card_id: str | None = None) -> Character:
    """A card from a file's bytes: PNG (SillyTavern), JSON or YAML."""
    from ocak.characters.tavern import PNG_SIGNATURE, read_png_card

    if raw.startswith(PNG_SIGNATURE):
        return card_from_data(read_png_card(raw, source=filename), source=filename, card_id=card_id)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CardError(f"{filename or 'card'}: not UTF-8 text, JSON, YAML or PNG") from exc
    data: Any
    if filename.lower().endswith(".json") or text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CardError(f"{filename or 'card'}: invalid JSON: {exc}") from exc
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise CardError(f"{filename or 'card'}: invalid YAML: {exc}") from exc
    return card_from_data(data, source=filename, card_id=card_id)


def load_card(path: Path, *, card_id: str | None = None) -> Character:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CardError(f"cannot read {path}: {exc.strerror}") from exc
    return parse_card_bytes(raw, filename=path.name, card_id=card_id)
