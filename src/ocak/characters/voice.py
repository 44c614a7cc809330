"""A character's turn, spoken: each sentence synthesized as soon as its text exists.

``voiced`` wraps a turn's events (``service``) and adds, in order:

    Spoken      one sentence's audio with its visemes and word timings, while the
                packet is still being generated
    AudioReset  the attempt that audio belonged to was discarded (a ``Reset`` follows)

and holds the turn's ``TurnDone`` back until the last sentence has been sent, so the
client has the whole answer's audio when it gets the packet. Only the packet's
``text`` is spoken (stage directions are already out of it); narration never is.

Emotion: the packet writes ``text`` before ``emotion``, so the first sentence is spoken
with the emotion the character showed last (its previous turn in the session, else
neutral), and every later sentence with this turn's, which the model writes a few tokens
after the text ends: while the first sentence plays (a second or more), the rest of
the packet is written. Moving ``emotion`` first would delay every turn's first text;
this delays nothing the player hears.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ocak.characters.api import AudioSegment, SpeechFormat, VisemeOut, WordOut
from ocak.characters.cards import VoiceSpec
from ocak.characters.events import (
    AudioReset,
    Feeling,
    Reset,
    Speaking,
    Spoken,
    TextComplete,
    TextPiece,
    TurnDone,
    TurnEvent,
)
from ocak.engines.speech.codec import Encoder
from ocak.engines.speech.tts import PiperVoice
from ocak.engines.speech.visemes import visemes, words
from ocak.errors import InvalidRequest
from ocak.serving.audio import TTS_MODEL, AudioServing, Relayed
from ocak.serving.context import CallContext

if TYPE_CHECKING:
    from ocak.characters.service import CharacterService

MAX_TRANSCRIPT_CHARS = 4000  # a player's line, as typed text may be

# How an emotion changes Piper's speech at full strength: (rate, liveliness). Piper has
# no pitch control; its noise scale varies pitch and energy. Scaled by the strength.
PROSODY: dict[str, tuple[float, float]] = {
    "neutral": (1.0, 1.0),
    "joy": (1.08, 1.25),
    "humor": (1.05, 1.2),
    "surprise": (1.12, 1.3),
    "anger": (1.12, 1.3),
    "fear": (1.15, 1.2),
    "tension": (1.06, 1.1),
    "interest": (1.03, 1.1),
    "affection": (0.93, 0.9),
    "sadness": (0.85, 0.7),
    "disgust": (0.95, 0.9),
    "contempt": (0.92, 0.85),
    "criticism": (1.0, 0.95),
    "defensiveness": (1.06, 1.1),
    "validation": (0.97, 1.0),
}

# A sentence ends at . ! ? or … (with closing quotes or brackets) before white space.
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*\s+")
# The first piece may end at a clause (a comma, a semicolon, a dash) once it is long
# enough to say: the player hears the answer begin before its first sentence is written.
_CLAUSE_END = re.compile(r"[,;:—–]\s+")
FIRST_CLAUSE_CHARS = 24


def prosody(emotion: str, strength: float) -> tuple[float, float]:
    """(speed factor, expressiveness) for ``emotion`` shown with ``strength`` (0-1)."""
    rate, lively = PROSODY.get(emotion, (1.0, 1.0))
    s = max(0.0, min(1.0, strength))
    return 1.0 + (rate - 1.0) * s, 1.0 + (lively - 1.0) * s


class SentenceSplitter:
    """Text deltas in, whole sentences out (the rest when the text ends); the first piece
    may be a clause of at least ``FIRST_CLAUSE_CHARS``."""

    def __init__(self) -> None:
        self._buffer = ""
        self._first = True

    def feed(self, text: str) -> list[str]:
        self._buffer += text
        out = []
        while (found := self._end()) is not None:
            sentence, self._buffer = self._buffer[: found.end()], self._buffer[found.end() :]
            if sentence.strip():
                out.append(sentence.strip())
                self._first = False
        return out

    def _end(self) -> re.Match[str] | None:
        found = _SENTENCE_END.search(self._buffer)
        if self._first:
            clause = _CLAUSE_END.search(self._buffer, FIRST_CLAUSE_CHARS)
            if clause is not None and (found is None or clause.start() < found.start()):
                return clause
        return found

    def rest(self) -> str | None:
        text, self._buffer = self._buffer.strip(), ""
        self._first = True  # (a retry starts over)
        return text or None


@dataclass(frozen=True, slots=True)
class Speaker:
    """Who speaks a voiced turn, and how."""

    voice: PiperVoice
    spec: VoiceSpec
    fmt: SpeechFormat
    last_emotion: tuple[str, float] = ("neutral", 0.0)


def render(
    speaker: Speaker, text: str, emotion: tuple[str, float], index: int, offset_ms: int
) -> AudioSegment:
    """One sentence as an ``AudioSegment`` (blocking: run it in a worker thread)."""
    speed, lively = prosody(*emotion) if speaker.spec.emotional else (1.0, 1.0)
    said = speaker.voice.speak(text, speed=speaker.spec.speed * speed, expressiveness=lively)
    encoder = Encoder(speaker.fmt, said.sample_rate)
    data = encoder.feed(said.pcm) + encoder.finish()
    return AudioSegment(
        index=index,
        text=text,
        emotion=emotion[0],
        format=speaker.fmt,
        sample_rate=said.sample_rate,
        audio=base64.b64encode(data).decode("ascii"),
        offset_ms=offset_ms,
        duration_ms=said.duration_ms,
        visemes=[
            VisemeOut(viseme=v.viseme, start_ms=v.start_ms)
            for v in visemes(said.phones, said.sample_rate)
        ]
        if said.phones
        else [],
        words=[
            WordOut(word=w.word, start_ms=w.start_ms, end_ms=w.end_ms)
            for w in words(text, said.phones, said.sample_rate)
        ],
    )


@dataclass(slots=True)
class _Line:
    attempt: int
    text: str


@dataclass(slots=True)
class _End:
    done: TurnDone | None


async def voiced(
    events: AsyncGenerator[TurnEvent, None], choose: Callable[[str], Speaker]
) -> AsyncGenerator[TurnEvent, None]:
    """``events`` with the answer spoken (see the module doc). ``choose(character_id)``
    gives the speaker once the turn has chosen it; its errors (an unknown voice, a key
    without speech) are raised before the turn's first event is passed on."""
    out: asyncio.Queue[TurnEvent | BaseException | None] = asyncio.Queue()
    lines: asyncio.Queue[_Line | _End] = asyncio.Queue()
    felt = asyncio.Event()  # this turn's emotion is known, or the text is complete
    state = {"attempt": 0, "pending": 0}
    emotion: list[tuple[str, float]] = []
    splitter = SentenceSplitter()
    speakers: list[Speaker] = []

    async def pump() -> None:
        try:
            async for event in events:
                if isinstance(event, Speaking):
                    speakers[:] = [choose(event.character)]
                elif isinstance(event, TextPiece):
                    for sentence in splitter.feed(event.text):
                        state["pending"] += 1
                        lines.put_nowait(_Line(state["attempt"], sentence))
                elif isinstance(event, TextComplete):  # speak the last sentence now
                    rest = splitter.rest()
                    if rest:
                        state["pending"] += 1
                        lines.put_nowait(_Line(state["attempt"], rest))
                elif isinstance(event, Feeling):
                    emotion[:] = [(event.label, event.strength)]
                    felt.set()
                elif isinstance(event, Reset):
                    if state["pending"]:
                        out.put_nowait(AudioReset(event.reason))
                    state["attempt"] += 1
                    state["pending"] = 0
                    splitter.rest()
                    emotion.clear()
                    felt.clear()
                elif isinstance(event, TurnDone):
                    rest = splitter.rest()  # text appended at the end (a provider's order)
                    if rest:
                        lines.put_nowait(_Line(state["attempt"], rest))
                    felt.set()
                    lines.put_nowait(_End(event))
                    return
                out.put_nowait(event)
            lines.put_nowait(_End(None))
        except BaseException as exc:  # the turn's error ends the voiced stream too
            out.put_nowait(exc)
            raise

    async def speak() -> None:
        index = offset = 0
        attempt = 0
        try:
            while True:
                item = await lines.get()
                if isinstance(item, _End):
                    if item.done is not None:
                        out.put_nowait(item.done)
                    out.put_nowait(None)
                    return
                if item.attempt != state["attempt"]:
                    continue  # a discarded attempt's sentence
                if item.attempt != attempt:
                    attempt, index, offset = item.attempt, 0, 0
                if index > 0:
                    await felt.wait()
                speaker = speakers[0]  # set: text comes after Speaking
                now = emotion[0] if emotion else speaker.last_emotion
                segment = await asyncio.to_thread(render, speaker, item.text, now, index, offset)
                if item.attempt != state["attempt"]:
                    continue
                out.put_nowait(Spoken(segment))
                index += 1
                offset += segment.duration_ms
        except BaseException as exc:
            out.put_nowait(exc)
            raise

    tasks = [asyncio.create_task(pump()), asyncio.create_task(speak())]
    try:
        while True:
            item = await out.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await events.aclose()


def speakers(
    service: CharacterService,
    audio: AudioServing,
    ctx: CallContext,
    session_id: str,
    fmt: SpeechFormat,
) -> Callable[[str], Speaker]:
    """How each character of a session speaks: its card's voice (else the server's first),
    after the key's permission to use the speech model."""

    def choose(character_id: str) -> Speaker:
        card = service.card(character_id)
        spec = card.voice or VoiceSpec()
        audio.keys.permit(ctx.key, TTS_MODEL)
        known = list(audio.catalog.voices)
        voice_id = spec.id or (known[0] if known else "")
        try:
            voice = audio.catalog.voice(TTS_MODEL, voice_id)
        except InvalidRequest as exc:  # the card names a voice this server lacks
            raise InvalidRequest(
                f"{card.name}'s card asks for the voice '{voice_id}', which this server does "
                f"not have (it has: {', '.join(known) or 'none'}).",
                param="voice",
                code="unknown_voice",
            ) from exc
        return Speaker(voice, spec, fmt, service.last_emotion(session_id, character_id))

    return choose


# A session's recordings are heard by this model: the local Whisper, or what an alias routes.
STT_MODEL = "whisper-1"


async def hear(
    audio: AudioServing, ctx: CallContext, data: bytes, *, language: str | None = None
) -> str:
    """The player's recording as a line of text (through the audio serving entry, so a
    local-only key's recording stays on this machine). Nothing heard is a 400."""
    heard = await audio.transcribe(
        ctx,
        model=STT_MODEL,
        data=data,
        language=language,
        prompt=None,
        words=False,
        temperature=0.0,
    )
    # A hosted upstream's answer is relayed as it wrote it (JSON, the format asked for).
    text = (_relayed_text(heard.raw) if isinstance(heard, Relayed) else heard.text).strip()
    if not text:
        raise InvalidRequest(
            "No speech was heard in the recording.", param="audio", code="no_speech"
        )
    if len(text) > MAX_TRANSCRIPT_CHARS:
        raise InvalidRequest(
            f"The recording holds {len(text)} characters of speech; a line may have at most "
            f"{MAX_TRANSCRIPT_CHARS}.",
            param="audio",
        )
    return text


def _relayed_text(raw: bytes) -> str:
    try:
        found = json.loads(raw).get("text", "")
    except (ValueError, AttributeError):
        return ""
    return found if isinstance(found, str) else ""
