"""The speech encoder keeps the audio it is fed: the same PCM, fed in sentence-sized parts,
decodes back to the same length in every format OpenAI's speech API names."""

from __future__ import annotations

import numpy as np
import pytest

from ocak.engines.speech.codec import Encoder, decode

RATE = 22050  # the bundled Piper voice's rate


def tone(seconds: float) -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * 220 * t) * 8000).astype(np.int16).tobytes()


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav"])
def test_every_format_keeps_the_length_of_what_it_was_fed(fmt: str) -> None:
    encoder = Encoder(fmt, RATE)  # type: ignore[arg-type]
    parts = [tone(0.4), tone(0.3)]  # two sentences, streamed one after the other
    data = b"".join(encoder.feed(p) for p in parts) + encoder.finish()
    extra = decode(data).size / 16000 - 0.7
    # lossy codecs lead in with their encoder delay and pad the last frame: at most two
    # frames (mp3 1152 samples, AAC in ADTS 1024, which keeps its priming); the rest exact
    frames = {"mp3": 2 * 1152, "aac": 2 * 1024}.get(fmt, 0)
    assert -0.002 < extra < frames / RATE + 0.002, (fmt, extra)


def test_pcm_is_passed_through() -> None:
    encoder = Encoder("pcm", RATE)
    assert encoder.feed(tone(0.1)) + encoder.finish() == tone(0.1)
