"""Speech aliases in the audio serving entry, without a network or a voice model: a remote
target that fails hands over to the local one, a local-only call never reaches a remote
target, and a local target that is no speech model is skipped (``TargetCannot``)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from gateway_stubs import remote_target
from ocak.config import Settings
from ocak.engines.registry import EngineRegistry
from ocak.errors import UpstreamError
from ocak.gateway.router import Alias, LocalTarget, Router
from ocak.protocol.record import RequestRecord
from ocak.providers import audio as upstream_audio
from ocak.providers.errors import LocalityRefused, TargetCannot, UpstreamUnreachable
from ocak.serving.audio import AudioServing, SpeechModels
from ocak.serving.context import CallContext


class Keys:
    def permit(self, key: object, model: str) -> None:
        pass

    def limit(self, key: object) -> None:
        pass


class FakeVoice:
    """Stands in for a loaded Piper voice: a sentence of PCM per call."""

    sample_rate = 22050

    def load(self) -> None:
        pass

    def sentences(self, text: str, *, speed: float = 1.0) -> Iterator[bytes]:
        yield b"\x01\x00" * 100


def serving(*targets: Any, voices: bool = True) -> AudioServing:
    aliases = {"voice": Alias("voice", list(targets))}
    models = SpeechModels(voices={"joe": FakeVoice()} if voices else {})  # type: ignore[dict-item]
    return AudioServing(Settings(), Keys(), models, Router(aliases, EngineRegistry()))


def ctx(local: bool = False) -> CallContext:
    return CallContext(RequestRecord("r1", "POST", "/v1/audio/speech"), asked_local=local)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The remote targets ``providers.audio.speech`` was asked to reach (each fails as an
    unreachable upstream would)."""
    calls: list[str] = []

    async def fake(provider: Any, model: str, *args: Any) -> Any:
        calls.append(f"{provider.name}/{model}")
        raise UpstreamUnreachable(f"cannot reach provider '{provider.name}'")

    monkeypatch.setattr(upstream_audio, "speech", fake)
    return calls


def speak(audio: AudioServing, call: CallContext, voice: str = "alloy", **kw: Any) -> bytes:
    async def run() -> bytes:
        chunks = await audio.speech(
            call, model="voice", text="Hi.", voice=voice, fmt="pcm", speed=1, **kw
        )
        return b"".join([c async for c in chunks])

    return asyncio.run(run())


def test_a_failing_remote_target_falls_back_to_the_local_voice(sent: list[str]) -> None:
    local = LocalTarget(name="local/piper", engine="piper", rank=1, params={"voice": "joe"})
    audio = serving(remote_target("hosted", "tts-1", retries=0), local)
    call = ctx()
    assert speak(audio, call) == b"\x01\x00" * 100
    assert sent == ["hosted/tts-1"]
    record = call.record
    assert (record.model, record.backend, record.locality) == ("voice", "piper:joe", "local")


def test_a_local_only_call_never_reaches_a_remote_target(sent: list[str]) -> None:
    local = LocalTarget(name="local/piper", engine="piper", rank=1)
    audio = serving(remote_target("hosted", "tts-1"), local)
    call = ctx(local=True)
    assert speak(audio, call, voice="joe")
    assert sent == [] and call.record.locality == "local"
    with pytest.raises(LocalityRefused, match="Nothing was sent"):
        speak(serving(remote_target("hosted", "tts-1")), ctx(local=True))
    assert sent == []


def test_a_local_target_that_cannot_speak_is_skipped(sent: list[str]) -> None:
    chat = LocalTarget(name="local/default", engine="default", rank=1)
    with pytest.raises(TargetCannot, match="not a speech model"):
        speak(serving(chat), ctx(), voice="joe")
    # after a remote failure, that failure is the answer (502), not the skipped target
    with pytest.raises(UpstreamError):
        speak(serving(remote_target("hosted", "tts-1", retries=0), chat), ctx())
    no_voices = LocalTarget(name="local/piper", engine="piper")
    with pytest.raises(TargetCannot):
        speak(serving(no_voices, voices=False), ctx(), voice="joe")


def test_instructions_go_only_to_a_hosted_target(sent: list[str]) -> None:
    local = LocalTarget(name="local/piper", engine="piper", rank=1)
    audio = serving(local)
    with pytest.raises(TargetCannot) as refused:
        speak(audio, ctx(), voice="joe", instructions="sad")
    assert refused.value.param == "instructions"
