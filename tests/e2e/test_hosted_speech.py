"""Hosted speech through the gateway, and voices from the model store, on a real server
with the real ``openai`` client.

A speech alias forwards ``/v1/audio/speech`` and ``/v1/audio/transcriptions`` to an
OpenAI-compatible upstream (a scripted one on loopback that records what it got) and
falls back to the local Piper and Whisper when it fails; a local-only key's text and
recordings never reach it. A Piper voice added with ``ocak models add`` speaks.
"""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from helpers import AppServer, ServerProcess
from keys_helpers import create_key, ocak, usage_rows
from ocak.engines.speech.codec import decode
from ocak.engines.speech.tts import bundled_voices

SECRET = "sk-hosted-speech-secret"
HOSTED_AUDIO = b"ID3-hosted-audio-" + bytes(range(256)) * 64  # 16 KiB, streamed in pieces
HOSTED_TEXT = "words the hosted model heard"
SENTENCE = "The old man walked down to the river at dawn."

CONFIG = """
providers:
  hosted: {{type: openai, base_url: "{url}/v1", api_key_env: OCAK_TEST_SPEECH_KEY}}
routing: {{retries: 1, backoff: 0.01}}
models:
  voice:
    targets: [{{provider: hosted, model: tts-hosted}}, {{local: piper, params: {{voice: joe}}}}]
  ears:
    targets: [{{provider: hosted, model: stt-hosted}}, {{local: whisper-tiny.en}}]
  hosted-voice: {{targets: [{{provider: hosted, model: tts-hosted}}]}}
"""


@dataclass
class Got:
    path: str
    headers: dict[str, str]
    json: dict[str, Any] | None = None
    form: dict[str, Any] = field(default_factory=dict)
    file: bytes = b""


class SpeechUpstream:
    """OpenAI's audio endpoints, scripted: answer, or fail with 500 while ``failing``."""

    def __init__(self) -> None:
        self.got: list[Got] = []
        self.failing = False
        self.lock = threading.Lock()
        app = Starlette(
            routes=[
                Route("/v1/audio/speech", self.speech, methods=["POST"]),
                Route("/v1/audio/transcriptions", self.transcribe, methods=["POST"]),
            ]
        )
        self.server = AppServer(app).__enter__()

    def reset(self) -> None:
        with self.lock:
            self.got.clear()
            self.failing = False

    def _keep(self, got: Got) -> Response | None:
        with self.lock:
            self.got.append(got)
            failing = self.failing
        if failing:
            error = {"error": {"message": "upstream down", "type": "server_error"}}
            return JSONResponse(error, status_code=500)
        return None

    async def speech(self, request: Request) -> Response:
        failed = self._keep(Got(request.url.path, dict(request.headers), json=await request.json()))
        if failed is not None:
            return failed

        async def pieces() -> Any:
            for i in range(0, len(HOSTED_AUDIO), 4096):
                yield HOSTED_AUDIO[i : i + 4096]

        return StreamingResponse(pieces(), media_type="audio/mpeg")

    async def transcribe(self, request: Request) -> Response:
        form = await request.form()
        upload = form["file"]
        assert not isinstance(upload, str)
        fields = {k: form.getlist(k) if k.endswith("[]") else form[k] for k in form if k != "file"}
        got = Got(request.url.path, dict(request.headers), form=fields, file=await upload.read())
        failed = self._keep(got)
        if failed is not None:
            return failed
        if fields.get("response_format") == "text":
            return PlainTextResponse(HOSTED_TEXT + "\n")
        return JSONResponse({"text": HOSTED_TEXT})


@dataclass
class Setup:
    server: ServerProcess
    upstream: SpeechUpstream
    data: Path
    client: openai.OpenAI  # a plain key
    local: openai.OpenAI  # a key with locality: local


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    data = tmp_path_factory.mktemp("hosted-speech")
    # a second Piper voice in the store: the bundled one's files under another name
    joe = bundled_voices()[0].path
    source = data / "voices"
    source.mkdir()
    shutil.copyfile(joe, source / "narrator.onnx")
    shutil.copyfile(joe.with_name(joe.name + ".json"), source / "narrator.onnx.json")
    added = ocak(data, "models", "add", str(source / "narrator.onnx"))
    assert added.stdout.strip() == "narrator (text-to-speech)"
    upstream = SpeechUpstream()
    key = create_key(data, "app")
    local_key = create_key(data, "offline", "--locality", "local")
    (data / "ocak.yaml").write_text(CONFIG.format(url=upstream.server.url))
    server = ServerProcess(
        ["--config", str(data / "ocak.yaml")],
        env={"OCAK_DATA_DIR": str(data), "OCAK_TEST_SPEECH_KEY": SECRET},
        log_path=data / "server.log",
    )
    try:
        server.wait_ready()
        url = f"{server.url}/v1"
        yield Setup(
            server,
            upstream,
            data,
            openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=60),
            openai.OpenAI(base_url=url, api_key=local_key, max_retries=0, timeout=60),
        )
    finally:
        server.stop()
        upstream.server.__exit__(None, None, None)


@pytest.fixture
def hosted(setup: Setup) -> Setup:
    setup.upstream.reset()
    return setup


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def test_speech_and_transcription_go_to_the_hosted_upstream(hosted: Setup) -> None:
    r = hosted.client.audio.speech.with_raw_response.create(
        model="voice", voice="alloy", input="Hello from far away.", response_format="mp3"
    )
    assert r.http_response.content == HOSTED_AUDIO  # the upstream's bytes, unchanged
    assert r.headers["x-ocak-backend"] == "hosted/tts-hosted"
    assert r.headers["x-ocak-locality"] == "remote"
    [got] = hosted.upstream.got
    assert got.path == "/v1/audio/speech" and got.headers["authorization"] == f"Bearer {SECRET}"
    assert got.json == {
        "model": "tts-hosted",
        "input": "Hello from far away.",
        "voice": "alloy",
        "response_format": "mp3",
    }

    recording = b"RIFF-a-player-recording" * 100
    text = hosted.client.audio.transcriptions.create(
        model="ears", file=("line.wav", recording), language="en"
    ).text
    assert text == HOSTED_TEXT
    plain = hosted.client.audio.transcriptions.create(
        model="ears", file=("line.wav", recording), response_format="text"
    )
    assert str(plain).strip() == HOSTED_TEXT  # relayed in the format asked for
    first, second = hosted.upstream.got[1:]
    assert first.file == recording and first.form["model"] == "stt-hosted"
    assert first.form["language"] == "en" and second.form["response_format"] == "text"
    rows = usage_rows(hosted.data, model="ears")
    assert {(r["backend"], r["locality"]) for r in rows} == {("hosted/stt-hosted", "remote")}


def test_a_failing_upstream_falls_back_to_piper_and_whisper(hosted: Setup) -> None:
    hosted.upstream.failing = True
    r = hosted.client.audio.speech.with_raw_response.create(
        model="voice", voice="alloy", input=SENTENCE, response_format="wav"
    )
    audio = r.http_response.content
    # Piper's joe (the local target's voice param stands in for OpenAI's alloy)
    assert r.headers["x-ocak-backend"] == "piper:joe" and r.headers["x-ocak-locality"] == "local"
    assert audio.startswith(b"RIFF") and decode(audio).size > 16000
    assert len(hosted.upstream.got) == 2  # tried, retried once, then the local target

    t = hosted.client.audio.transcriptions.with_raw_response.create(
        model="ears", file=("line.wav", audio)
    )
    assert words(t.parse().text) == words(SENTENCE)  # Whisper heard Piper
    assert t.headers["x-ocak-backend"] == "faster-whisper:whisper-tiny.en"
    assert len(hosted.upstream.got) == 4 and hosted.upstream.got[-1].file == audio
    rows = usage_rows(hosted.data, model="voice")
    assert (rows[-1]["backend"], rows[-1]["locality"]) == ("piper:joe", "local")


def test_a_local_only_key_sends_nothing_off_the_machine(hosted: Setup) -> None:
    r = hosted.local.audio.speech.with_raw_response.create(
        model="voice", voice="joe", input="Stay here.", response_format="wav"
    )
    assert r.headers["x-ocak-locality"] == "local" and decode(r.http_response.content).size
    text = hosted.local.audio.transcriptions.create(
        model="ears", file=("line.wav", r.http_response.content)
    ).text
    assert "stay" in words(text)
    with pytest.raises(openai.PermissionDeniedError) as refused:
        hosted.local.audio.speech.create(model="hosted-voice", voice="alloy", input="Secret.")
    error = refused.value.body
    assert isinstance(error, dict) and error["code"] == "locality_local_required"
    assert error["param"] == "model" and "Nothing was sent" in error["message"]
    assert hosted.upstream.got == []  # the upstream received nothing at all
    rows = usage_rows(hosted.data, key_name="offline")
    assert rows and all(r["locality"] in ("local", None) for r in rows)


def test_a_stored_voice_speaks(hosted: Setup) -> None:
    models = {m.id: m.model_dump() for m in hosted.client.models.list()}
    assert sorted(models["piper"]["meta"]["voices"]) == ["joe", "narrator"]
    assert models["voice"]["object"] == "model"  # the alias is listed like a chat alias
    r = hosted.client.audio.speech.with_raw_response.create(
        model="tts-1", voice="narrator", input="Good morning.", response_format="wav"
    )
    assert r.headers["x-ocak-backend"] == "piper:narrator"
    samples = decode(r.http_response.content)
    assert 0.4 < samples.size / 16000 < 1.5 and float(abs(samples).max()) > 0.1
