"""Speech in and out (``/v1/audio/speech``, ``/v1/audio/transcriptions``), through the
serving layer as chat is: the key's permission and limits, the record, the caps.

The speech models are local: Piper voices and Whisper, found in their packages (and
voices added to the model store) without a download, and loaded on first use (in a
worker thread, like every engine). OpenAI's model names (``tts-1``, ``whisper-1``, ...)
name them too, so an application written for OpenAI's audio API only changes its base
URL.

A model name that is a gateway alias is routed as chat is (``Router.run``): its targets
in order, with retries, fallback and breakers; a local target names a local speech
model (``piper``, ``whisper-tiny.en``), a remote one an OpenAI-compatible upstream's
model, sent the client's own fields (``providers/audio.py``). A local-only call never
reaches a remote target: the router leaves them out before anything is sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ocak.config import Settings
from ocak.engines.speech.codec import AudioFormat, Encoder, decode
from ocak.engines.speech.stt import BUNDLED_STT, Transcript, WhisperModel, bundled_stt
from ocak.engines.speech.tts import PiperVoice, SpeechUnavailable, VoiceFile, bundled_voices
from ocak.errors import InvalidRequest, ModelNotFound, PayloadTooLarge, UnsupportedParameter
from ocak.gateway.router import LocalTarget, Router, Target
from ocak.models.store import ModelStore
from ocak.models.voices import stored_voices
from ocak.providers import audio as upstream_audio
from ocak.providers.audio import AudioUpload
from ocak.providers.base import Locality
from ocak.providers.errors import TargetCannot
from ocak.serving.admission import KeyChecks, admit_model
from ocak.serving.context import CallContext
from ocak.store.keys import KeyInfo

TTS_MODEL = "piper"
TTS_ALIASES = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
STT_ALIASES = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe")
MAX_INPUT_CHARS = 4096  # OpenAI's limit for one speech request


@dataclass(frozen=True, slots=True)
class SpeechModel:
    """A name the audio API answers for."""

    id: str
    kind: str  # text-to-speech or speech-to-text
    engine: str


@dataclass(frozen=True, slots=True)
class Relayed:
    """A hosted upstream's transcript, in the format the client asked for, as it wrote it."""

    raw: bytes
    media_type: str


@dataclass
class SpeechModels:
    """The voices and the transcribers this server has."""

    voices: dict[str, PiperVoice] = field(default_factory=dict)
    transcribers: dict[str, WhisperModel] = field(default_factory=dict)

    @classmethod
    def bundled(cls, settings: Settings) -> SpeechModels:
        """The packaged voice and Whisper, and the Piper voices of the model store (a stored
        voice of a bundled one's name replaces it: the operator put it there)."""
        threads = settings.threads or 0
        voices = {v.id: PiperVoice(v) for v in bundled_voices()}
        stt = bundled_stt()
        found = {BUNDLED_STT: WhisperModel(stt, threads=threads, english_only=True)} if stt else {}
        models = cls(voices, found)
        for stored in stored_voices(ModelStore(settings.model_dir)):
            models.add_voice(VoiceFile(stored.name, stored.path))
        return models

    def add_voice(self, voice: VoiceFile) -> None:
        self.voices[voice.id] = PiperVoice(voice)

    def local_names(self) -> list[str]:
        """What a gateway alias's local target may name: ``piper`` and the transcribers."""
        return [TTS_MODEL, *self.transcribers] if self.voices else [*self.transcribers]

    def tts_names(self) -> list[str]:
        return [TTS_MODEL, *TTS_ALIASES] if self.voices else []

    def stt_names(self) -> list[str]:
        return [*self.transcribers, *STT_ALIASES] if self.transcribers else []

    def listed(self) -> list[SpeechModel]:
        return [SpeechModel(n, "text-to-speech", "piper") for n in self.tts_names()] + [
            SpeechModel(n, "speech-to-text", "faster-whisper") for n in self.stt_names()
        ]

    def voice(self, model: str, voice: str) -> PiperVoice:
        if model not in self.tts_names():
            raise ModelNotFound(model, self._missing(model, self.tts_names(), "speech"))
        found = self.voices.get(voice)
        if found is None:
            raise InvalidRequest(
                f"Unknown voice '{voice}'; this server has: {', '.join(self.voices)}.",
                param="voice",
                code="unknown_voice",
            )
        return found

    def transcriber(self, model: str) -> WhisperModel:
        if model in STT_ALIASES and self.transcribers:
            return next(iter(self.transcribers.values()))
        found = self.transcribers.get(model)
        if found is None:
            raise ModelNotFound(model, self._missing(model, self.stt_names(), "transcription"))
        return found

    @staticmethod
    def _missing(model: str, known: list[str], what: str) -> str:
        if not known:
            return f"No {what} model is installed: pip install 'ocak[voice]' (Piper is GPL-3.0)."
        return f"The {what} model '{model}' does not exist; this server has: {', '.join(known)}."


class AudioServing:
    """The audio requests' one entry (see the module doc)."""

    def __init__(
        self,
        settings: Settings,
        keys: KeyChecks,
        models: SpeechModels,
        router: Router | None = None,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.catalog = models
        self.router = router  # the gateway's: aliases of speech models are routed

    def _routed(self, model: str) -> bool:
        return self.router is not None and model in self.router.aliases

    def models(self, key: KeyInfo | None) -> list[SpeechModel]:
        """The speech models a key may use (``GET /v1/models`` and gRPC list them)."""
        return [m for m in self.catalog.listed() if key is None or key.allows(m.id)]

    def _admit(self, ctx: CallContext, model: str, backend: str) -> None:
        admit_model(self.keys, ctx, model, backend)

    async def speech(
        self,
        ctx: CallContext,
        *,
        model: str,
        text: str,
        voice: str,
        fmt: AudioFormat,
        speed: float,
        instructions: str | None = None,
        sent: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[bytes]:
        """The encoded audio of ``text``, a sentence at a time; errors before the first byte
        (unknown model or voice, caps, every target of an alias failing) are raised by this
        call, not by the iterator. ``sent``: the client's own JSON fields, which a hosted
        target is sent (the named arguments when None); ``instructions``, a style prompt,
        only a hosted target takes."""
        if len(text) > MAX_INPUT_CHARS:
            raise InvalidRequest(
                f"The input is {len(text)} characters; at most {MAX_INPUT_CHARS} per request.",
                param="input",
            )
        if not text.strip():
            raise InvalidRequest("The input is empty.", param="input")
        if self._routed(model):
            client = dict(sent) if sent is not None else {}
            if sent is None:
                client.update(input=text, voice=voice, response_format=fmt, speed=speed)
                if instructions:
                    client["instructions"] = instructions
            return await self._route_speech(ctx, model, client, text, voice, fmt, speed)
        if instructions:
            raise UnsupportedParameter(
                "instructions", "Piper voices speak as they were trained (no style prompts)"
            )
        chosen = self.catalog.voice(model, voice)
        self._admit(ctx, model, f"piper:{voice}")
        return await self._synthesize(chosen, text, fmt, speed)

    async def _synthesize(
        self, chosen: PiperVoice, text: str, fmt: AudioFormat, speed: float
    ) -> AsyncIterator[bytes]:
        await asyncio.to_thread(chosen.load)
        encoder = Encoder(fmt, chosen.sample_rate)
        return _spoken(chosen.sentences(text, speed=speed), encoder)

    def _admit_alias(self, ctx: CallContext, model: str) -> None:
        admit_model(self.keys, ctx, model)

    async def _route_speech(
        self,
        ctx: CallContext,
        model: str,
        client: dict[str, Any],
        text: str,
        voice: str,
        fmt: AudioFormat,
        speed: float,
    ) -> AsyncIterator[bytes]:
        """An alias's targets in order until one starts answering (see the module doc)."""
        assert self.router is not None
        self._admit_alias(ctx, model)
        record = ctx.record

        async def attempt(target: Target) -> tuple[AsyncIterator[bytes], Locality]:
            if isinstance(target, LocalTarget):
                if target.engine not in self.catalog.tts_names():
                    raise TargetCannot(f"{target.name} is not a speech model", param="model")
                if client.get("instructions"):
                    raise TargetCannot(
                        f"{target.name}: Piper voices take no style prompt", param="instructions"
                    )
                name = self._local_voice(voice, target)
                chosen = self.catalog.voice(target.engine, name)
                record.backend, record.locality = f"piper:{name}", "local"
                return await self._synthesize(chosen, text, fmt, speed), "local"
            record.backend, record.locality = target.name, None
            payload = {k: v for k, v in client.items() if k not in ("model", "stream_format")}
            for k, v in target.params.items():
                payload.setdefault(k, v)
            audio = await upstream_audio.speech(
                target.provider, target.model, payload, target.timeouts, ctx.local_only
            )
            return audio.chunks(), audio.locality

        served = await self.router.run(model, attempt, local_only=ctx.local_only)
        record.locality = served.locality
        return served.result

    def _local_voice(self, voice: str, target: LocalTarget) -> str:
        """The client's voice when this server has it; else the target's ``voice`` param (the
        Piper voice that stands in for a hosted one such as OpenAI's ``alloy``)."""
        if voice in self.catalog.voices:
            return voice
        fallback = target.params.get("voice")
        return fallback if isinstance(fallback, str) else voice

    async def transcribe(
        self,
        ctx: CallContext,
        *,
        model: str,
        data: bytes,
        language: str | None,
        prompt: str | None,
        words: bool,
        temperature: float,
        response_format: str = "json",
        granularities: Sequence[str] = (),
        filename: str = "audio",
        content_type: str | None = None,
    ) -> Transcript | Relayed:
        """The transcript of ``data``; from a hosted target of an alias, the upstream's own
        answer in ``response_format`` (``Relayed``). Local models always give a
        ``Transcript``."""
        if len(data) > self.settings.max_audio_bytes:
            raise PayloadTooLarge(
                f"The audio file is {len(data)} bytes; at most {self.settings.max_audio_bytes} "
                "(max_audio_bytes).",
                param="file",
            )
        if self._routed(model):
            fields: dict[str, str | list[str]] = {
                "response_format": response_format,
                "temperature": f"{temperature:g}",
            }
            if language is not None:
                fields["language"] = language
            if prompt is not None:
                fields["prompt"] = prompt
            if granularities:
                fields["timestamp_granularities[]"] = list(granularities)
            upload = AudioUpload(data, filename, content_type)

            async def local(whisper: WhisperModel) -> Transcript:
                return await self._whisper(whisper, data, language, prompt, words, temperature)

            return await self._route_transcription(ctx, model, fields, upload, language, local)
        whisper = self.catalog.transcriber(model)
        _check_language(whisper, language, InvalidRequest)
        self._admit(ctx, model, f"faster-whisper:{BUNDLED_STT}")
        return await self._whisper(whisper, data, language, prompt, words, temperature)

    @staticmethod
    async def _whisper(
        whisper: WhisperModel,
        data: bytes,
        language: str | None,
        prompt: str | None,
        words: bool,
        temperature: float,
    ) -> Transcript:
        audio = await asyncio.to_thread(decode, data)
        return await asyncio.to_thread(
            whisper.transcribe,
            audio,
            language=language,
            prompt=prompt,
            words=words,
            temperature=temperature,
        )

    async def _route_transcription(
        self,
        ctx: CallContext,
        model: str,
        fields: dict[str, str | list[str]],
        upload: AudioUpload,
        language: str | None,
        local: Callable[[WhisperModel], Awaitable[Transcript]],
    ) -> Transcript | Relayed:
        """An alias's targets in order until one answers (see the module doc)."""
        assert self.router is not None
        self._admit_alias(ctx, model)
        record = ctx.record

        async def attempt(target: Target) -> tuple[Transcript | Relayed, Locality]:
            if isinstance(target, LocalTarget):
                whisper = self.catalog.transcribers.get(target.engine)
                if whisper is None:
                    raise TargetCannot(f"{target.name} is not a transcription model", param="model")
                _check_language(whisper, language, TargetCannot)
                record.backend, record.locality = f"faster-whisper:{target.engine}", "local"
                return await local(whisper), "local"
            record.backend, record.locality = target.name, None
            form = dict(fields)
            for k, v in target.params.items():
                if isinstance(v, str | int | float) and not isinstance(v, bool):
                    form.setdefault(k, str(v))
            answer = await upstream_audio.transcription(
                target.provider, target.model, form, upload, target.timeouts, ctx.local_only
            )
            return Relayed(answer.raw, answer.media_type), answer.locality

        served = await self.router.run(model, attempt, local_only=ctx.local_only)
        record.locality = served.locality
        return served.result


def _check_language(
    whisper: WhisperModel, language: str | None, error: type[InvalidRequest]
) -> None:
    if whisper.english_only and language not in (None, "en"):
        raise error(
            f"This transcription model reads English only (language 'en'), not '{language}'.",
            param="language",
        )


async def _spoken(sentences: Iterator[bytes], encoder: Encoder) -> AsyncIterator[bytes]:
    """Each sentence synthesized in a worker thread and encoded as soon as it exists."""
    done = object()
    while True:
        pcm = await asyncio.to_thread(next, sentences, done)
        if pcm is done:
            break
        assert isinstance(pcm, bytes)
        out = encoder.feed(pcm)
        if out:
            yield out
    tail = encoder.finish()
    if tail:
        yield tail


__all__ = ["AudioServing", "Relayed", "SpeechModels", "SpeechUnavailable"]
