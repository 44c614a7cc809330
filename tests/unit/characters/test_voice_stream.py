"""A voiced turn (``characters.voice``): sentences spoken while the packet is still being
generated, in order, with the emotion rule, the reset rule and the packet held back until
the last audio. The turn's events and the voice are stand-ins; the rest is real."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncGenerator
from typing import Any, cast

import pytest

from ocak.characters.api import Recorded
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
from ocak.characters.voice import SentenceSplitter, Speaker, prosody, voiced
from ocak.engines.speech.tts import PiperVoice, Utterance
from ocak.engines.speech.visemes import VISEMES, Phone, viseme_of, visemes, words

RATE = 1000  # one sample a millisecond keeps the arithmetic readable


class Voice:
    """Speaks 10 ms per character; remembers how it was asked to speak."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, float, float]] = []

    def speak(self, text: str, *, speed: float = 1.0, expressiveness: float = 1.0) -> Utterance:
        self.asked.append((text, speed, expressiveness))
        phones = [Phone(" " if c == " " else "a", 10) for c in text]
        return Utterance(b"\0\0" * 10 * len(text), RATE, phones)


def speaker(voice: Voice, last: tuple[str, float] = ("sadness", 1.0)) -> Speaker:
    return Speaker(cast(PiperVoice, voice), VoiceSpec(), "pcm", last)


def done() -> TurnDone:
    return TurnDone(Recorded(session_id="s", seq=1))


async def collect(
    script: AsyncGenerator[TurnEvent, None], voice: Voice, heard: asyncio.Event | None = None
) -> list[TurnEvent]:
    out = []
    async for event in voiced(script, lambda _id: speaker(voice)):
        if isinstance(event, Spoken) and heard is not None:
            heard.set()
        out.append(event)
    return out


def speaking() -> Speaking:
    return Speaking("npc", "Npc", cast(Any, None))


def test_sentences_are_spoken_while_the_packet_is_still_written() -> None:
    voice = Voice()

    async def run() -> list[TurnEvent]:
        heard = asyncio.Event()

        async def turn() -> AsyncGenerator[TurnEvent, None]:
            yield speaking()
            yield TextPiece("Hello there. How")
            # the model goes on only once the first sentence's audio has been sent
            await asyncio.wait_for(heard.wait(), 5)
            yield TextPiece(" are you? Fine")
            yield Feeling("joy", 1.0)
            yield done()

        return await collect(turn(), voice, heard)

    events = asyncio.run(run())
    spoken = [e.segment for e in events if isinstance(e, Spoken)]
    assert [s.text for s in spoken] == ["Hello there.", "How are you?", "Fine"]
    first_audio = next(i for i, e in enumerate(events) if isinstance(e, Spoken))
    later_text = [i for i, e in enumerate(events) if isinstance(e, TextPiece)][1]
    assert first_audio < later_text
    assert isinstance(events[-1], TurnDone)  # the packet waits for the last audio
    # the first sentence with the character's last emotion, the rest with this turn's
    assert [s.emotion for s in spoken] == ["sadness", "joy", "joy"]
    assert voice.asked[0][1] == pytest.approx(prosody("sadness", 1.0)[0])
    assert voice.asked[1][1] == pytest.approx(prosody("joy", 1.0)[0])
    assert [s.index for s in spoken] == [0, 1, 2]
    assert [s.offset_ms for s in spoken] == [0, 120, 240]
    assert [s.duration_ms for s in spoken] == [120, 120, 40]
    assert len(base64.b64decode(spoken[0].audio)) == 2 * 120  # 16-bit PCM
    assert [w.word for w in spoken[1].words] == ["How", "are", "you"]


def test_the_last_sentence_is_spoken_when_the_text_closes_not_when_the_packet_ends() -> None:
    async def run() -> list[TurnEvent]:
        heard = asyncio.Event()

        async def turn() -> AsyncGenerator[TurnEvent, None]:
            yield speaking()
            yield TextPiece("Aye, I can mend it")  # no full stop: one unfinished sentence
            yield TextComplete()
            # narration, emotion, actions and relationship are still being written
            await asyncio.wait_for(heard.wait(), 5)
            yield Feeling("joy", 0.5)
            yield done()

        return await collect(turn(), Voice(), heard)

    events = asyncio.run(run())
    assert [e.segment.text for e in events if isinstance(e, Spoken)] == ["Aye, I can mend it"]


def test_a_retried_packet_resets_the_audio_already_sent() -> None:
    voice = Voice()

    async def run() -> list[TurnEvent]:
        heard = asyncio.Event()

        async def turn() -> AsyncGenerator[TurnEvent, None]:
            yield speaking()
            yield TextPiece("Bad words here. ")
            await asyncio.wait_for(heard.wait(), 5)
            yield Reset("the packet did not validate")
            yield TextPiece("Good.")
            yield Feeling("neutral", 0.2)
            yield done()

        return await collect(turn(), voice, heard)

    events = asyncio.run(run())
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("AudioReset") < kinds.index("Reset")
    after = [e.segment for e in events[kinds.index("Reset") :] if isinstance(e, Spoken)]
    assert [(s.index, s.offset_ms, s.text) for s in after] == [(0, 0, "Good.")]


def test_no_audio_reset_when_nothing_was_spoken() -> None:
    async def turn() -> AsyncGenerator[TurnEvent, None]:
        yield speaking()
        yield Reset("invalid")
        yield TextPiece("Aye.")
        yield done()

    events = asyncio.run(collect(turn(), Voice()))
    assert not any(isinstance(e, AudioReset) for e in events)
    assert [e.segment.text for e in events if isinstance(e, Spoken)] == ["Aye."]


def test_closing_the_voiced_turn_stops_its_generation() -> None:
    stopped = asyncio.Event()

    async def run() -> None:
        async def turn() -> AsyncGenerator[TurnEvent, None]:
            try:
                yield speaking()
                yield TextPiece("One. ")
                await asyncio.sleep(60)  # the model still writing
                yield done()
            finally:
                stopped.set()

        stream = voiced(turn(), lambda _id: speaker(Voice()))
        async for event in stream:
            if isinstance(event, Spoken):
                break  # the player cut in
        await stream.aclose()
        assert stopped.is_set()

    asyncio.run(asyncio.wait_for(run(), 10))


def test_an_unknown_voice_fails_before_the_first_event() -> None:
    async def turn() -> AsyncGenerator[TurnEvent, None]:
        yield speaking()
        yield done()

    def choose(_id: str) -> Speaker:
        raise LookupError("no such voice")

    async def first() -> TurnEvent:
        return await anext(voiced(turn(), choose))

    with pytest.raises(LookupError):
        asyncio.run(first())


def test_the_first_piece_may_be_a_long_enough_clause() -> None:
    split = SentenceSplitter()
    assert split.feed("Aye, lad, ") == []  # too short a clause to say alone
    assert split.feed("that blade needs mending, and it") == ["Aye, lad, that blade needs mending,"]
    assert split.feed(" will cost you, friend. Come back") == ["and it will cost you, friend."]
    assert split.rest() == "Come back"


def test_sentence_splitter() -> None:
    split = SentenceSplitter()
    assert split.feed("Wait! The") == ["Wait!"]
    assert split.feed(' gate... "Go." It') == ["The gate...", '"Go."']
    assert split.feed(" is 3.5 leagues") == []
    assert split.rest() == "It is 3.5 leagues"
    assert split.rest() is None


def test_prosody_scales_with_strength() -> None:
    assert prosody("anger", 0.0) == (1.0, 1.0)
    fast, lively = prosody("anger", 1.0)
    slow, flat = prosody("sadness", 1.0)
    assert fast > 1.0 > slow and lively > 1.0 > flat
    assert prosody("anger", 0.5)[0] == pytest.approx(1 + (fast - 1) / 2)
    assert prosody("unknown", 1.0) == (1.0, 1.0)


def test_visemes_cover_english_phonemes_and_mark_silence() -> None:
    english = "pbmfvθðtdɾkɡŋhʃʒszlnɹɚaɑæʌɐeɛəɜiɪjoɔuʊw"
    assert all(viseme_of(p) in VISEMES for p in english)
    phones = [Phone(p, 100) for p in ["^", "h", "ˈ", "ɛ", "l", "o", "ʊ", ",", " ", "t", "ʃ", "$"]]
    track = visemes(phones, RATE)
    assert [v.viseme for v in track] == ["sil", "kk", "E", "nn", "oh", "ou", "sil", "CH", "sil"]
    assert [v.start_ms for v in track] == [0, 100, 300, 400, 500, 600, 700, 900, 1100]
    timed = words("Hello, chum", [*phones[:-1], Phone("ʌ", 100), Phone("m", 100)], RATE)
    assert [(w.word, w.start_ms, w.end_ms) for w in timed] == [
        ("Hello", 100, 700),
        ("chum", 900, 1300),
    ]
