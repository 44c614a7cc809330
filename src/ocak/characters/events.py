"""The events of a character's turn (see ``service``), and its input."""

from __future__ import annotations

from dataclasses import dataclass

from ocak.characters.api import Recorded, TurnOut
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


@dataclass(frozen=True, slots=True)
class Speaking:
    character: str
    name: str
    model: ServingModel


@dataclass(frozen=True, slots=True)
class TextPiece:
    text: str


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


TurnEvent = Speaking | TextPiece | Reset | Generated | TurnDone
