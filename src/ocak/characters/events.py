"""The events of a character's turn (see ``service``), and its input."""

from __future__ import annotations

from dataclasses import dataclass

from ocak.characters.api import AudioSegment, Recorded, TurnOut
from ocak.characters.serving import ServingModel
from ocak.protocol.generation import FinishReason, Usage


@dataclass(frozen=True, slots=True)
class TurnInput:
    text: str | None = None
    event: str | None = None
    character: str | None = None
    respond: bool = True
    temperature: float | None = None
    seed: int | None = None
    request_id: str | None = None
    spoken: bool = False  # ``text`` is the transcript of the player's recording


@dataclass(frozen=True, slots=True)
class Speaking:
    character: str
    name: str
    model: ServingModel


@dataclass(frozen=True, slots=True)
class TextPiece:
    text: str


@dataclass(frozen=True, slots=True)
class TextComplete:
    """The packet's text field has closed: no more speakable text comes (barring a retry)."""


@dataclass(frozen=True, slots=True)
class Feeling:
    """The packet's emotion, as soon as the model has written it (before the turn ends)."""

    label: str
    strength: float


@dataclass(frozen=True, slots=True)
class Spoken:
    """One sentence of the answer as audio, with its lip-sync data (a voiced turn)."""

    segment: AudioSegment


@dataclass(frozen=True, slots=True)
class AudioReset:
    """The audio sent so far belongs to a discarded attempt."""

    reason: str


@dataclass(frozen=True, slots=True)
class Reset:
    reason: str


@dataclass(frozen=True, slots=True)
class Generated:
    usage: Usage
    reason: FinishReason


@dataclass(frozen=True, slots=True)
class TurnDone:
    turn: TurnOut | Recorded


TurnEvent = (
    Speaking
    | TextPiece
    | TextComplete
    | Feeling
    | Spoken
    | AudioReset
    | Reset
    | Generated
    | TurnDone
)
