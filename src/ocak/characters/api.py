"""Wire types of the characters API (``/v1/characters``, ``/v1/sessions``), pydantic v2."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ocak.characters.cards import ID_PATTERN, Character
from ocak.characters.relationship import DIMENSIONS, RelationshipState, label


class CharacterList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Character]


class Deleted(BaseModel):
    id: str
    object: Literal["character"] = "character"
    deleted: bool = True


class CreateSession(BaseModel):
    model_config = ConfigDict(extra="forbid")

    player_id: str = Field(min_length=1, max_length=128, description="The player's stable id.")
    player_name: str | None = Field(
        None, max_length=100, description="How characters call the player (default: player_id)."
    )
    characters: list[str] = Field(min_length=1, max_length=16, description="Character ids.")
    scene: str = Field("", max_length=4000, description="Where and when this takes place.")
    greet: bool = Field(True, description="Characters with a greeting say it first.")


class JoinRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    character: str = Field(pattern=ID_PATTERN)


class MessageIn(BaseModel):
    """The player's line, or a game event, to a session; one character answers."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, max_length=4000, description="What the player says.")
    event: str | None = Field(
        None,
        max_length=2000,
        description="Something that happened in the game, e.g. "
        "'the player drew a sword'; characters perceive and react to it.",
    )
    character: str | None = Field(
        None, description="Who should answer (default: turn-taking, addressed by name first)."
    )
    respond: bool = Field(True, description="False: only record the line or event.")
    stream: bool = Field(False, description="Answer as server-sent events.")
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    seed: int | None = None

    @model_validator(mode="after")
    def _something(self) -> MessageIn:
        if not self.respond and not (self.text or self.event):
            raise ValueError("give 'text' or 'event' to record")
        return self


class EmotionOut(BaseModel):
    label: str
    strength: float = Field(ge=0.0, le=1.0)


class ActionOut(BaseModel):
    name: str
    parameters: dict[str, Any]


class Dimension(BaseModel):
    value: float
    label: str
    change: float = 0.0


class RelationshipOut(BaseModel):
    trust: Dimension
    respect: Dimension
    familiarity: Dimension

    @classmethod
    def of(
        cls, state: RelationshipState, change: dict[str, float] | None = None
    ) -> RelationshipOut:
        change = change or {}
        return cls(
            **{
                d: Dimension(
                    value=state.get(d), label=label(d, state.get(d)), change=change.get(d, 0.0)
                )
                for d in DIMENSIONS
            }
        )


class TurnUsage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    attempts: int = 0


class TurnOut(BaseModel):
    """A character's turn: the packet, and what went into it."""

    object: Literal["character.turn"] = "character.turn"
    session_id: str
    seq: int
    character: str
    name: str
    text: str = Field(description="Speakable text only: no stage directions.")
    narration: str = Field(description="Stage directions and gestures.")
    emotion: EmotionOut
    actions: list[ActionOut]
    relationship: RelationshipOut
    memories: list[str] = Field(description="Memories recalled into the prompt.")
    lore: list[str] = Field(description="Lorebook entries activated for this turn.")
    model: str
    usage: TurnUsage


class Recorded(BaseModel):
    """A line or event recorded without a reply (``respond: false``)."""

    object: Literal["session.input"] = "session.input"
    session_id: str
    seq: int


class TurnView(BaseModel):
    seq: int
    kind: Literal["player", "event", "character", "join", "leave"]
    speaker: str | None
    addressed: str | None = None
    text: str
    narration: str | None = None
    emotion: EmotionOut | None = None
    actions: list[ActionOut] | None = None
    created_at: float


class SessionOut(BaseModel):
    object: Literal["session"] = "session"
    id: str
    player_id: str
    player_name: str
    scene: str
    characters: list[str] = Field(description="Current members, in the order they joined.")
    created_at: float
    turns: list[TurnView]
    relationships: dict[str, RelationshipOut]
    summaries: dict[str, str] = Field(description="Each member's summary of older turns.")
