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


class DeletedSession(BaseModel):
    id: str
    object: Literal["session"] = "session"
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


class AudioIn(BaseModel):
    """The player's line as a recording (transcribed, then used as ``text``)."""

    model_config = ConfigDict(extra="forbid")

    data: str = Field(description="The recording, base64: wav, mp3, ogg/opus, flac, webm...")
    language: str | None = Field(None, description="The language spoken (default: detect).")


SpeechFormat = Literal["pcm", "wav", "mp3", "opus", "flac", "aac"]


class MessageIn(BaseModel):
    """The player's line, or a game event, to a session; one character answers."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, max_length=4000, description="What the player says.")
    audio: AudioIn | None = Field(
        None, description="What the player says, as a recording instead of text."
    )
    voice: bool = Field(False, description="Speak the answer: `audio` events with lip-sync data.")
    voice_format: SpeechFormat = Field(
        "pcm", description="Each sentence's audio: pcm (16-bit mono), or a whole wav/mp3/... file."
    )
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
        if self.audio is not None and self.text is not None:
            raise ValueError("give 'text' or 'audio', not both")
        if not self.respond and not (self.text or self.event or self.audio):
            raise ValueError("give 'text', 'audio' or 'event' to record")
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


class VisemeOut(BaseModel):
    viseme: str = Field(description="One of the 15 OVR visemes (sil, PP, FF, TH, DD, kk, ...).")
    start_ms: int


class WordOut(BaseModel):
    word: str
    start_ms: int
    end_ms: int


class AudioSegment(BaseModel):
    """One sentence of a character's answer as audio; times are from the segment's start."""

    index: int = Field(description="0, 1, ... in the order they are to be played.")
    text: str = Field(description="What the segment says.")
    emotion: str = Field(description="The emotion it was spoken with.")
    format: SpeechFormat
    sample_rate: int
    audio: str = Field(description="The audio, base64.")
    offset_ms: int = Field(description="Where the segment starts in the turn's audio.")
    duration_ms: int
    visemes: list[VisemeOut]
    words: list[WordOut]


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
    transcript: str | None = Field(None, description="The player's recording, as heard.")
    speech: list[AudioSegment] | None = Field(
        None, description="The answer's audio (a voiced turn that is not streamed)."
    )


class Recorded(BaseModel):
    """A line or event recorded without a reply (``respond: false``)."""

    object: Literal["session.input"] = "session.input"
    session_id: str
    seq: int
    transcript: str | None = Field(None, description="The player's recording, as heard.")


class TurnView(BaseModel):
    seq: int
    kind: Literal["player", "event", "character", "join", "leave"]
    speaker: str | None
    addressed: str | None = None
    text: str
    narration: str | None = None
    emotion: EmotionOut | None = None
    actions: list[ActionOut] | None = None
    interrupted: bool = Field(False, description="The player cut in: `text` is what was heard.")
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
