"""A live spoken conversation with a session's characters (``/v1/sessions/{id}/voice``).

The transport hands ``Conversation`` the player's microphone (16 kHz 16-bit mono PCM) and
control messages, and sends what it emits. The loop:

1. Silero VAD finds where the player's line starts and ends (``silence_ms`` of quiet).
2. The line is transcribed (Whisper, through the audio serving entry) and answered as a
   voiced turn: text deltas, one ``audio`` message per sentence with visemes and word
   timings, then ``done``. Each turn is its own request record (usage, limits, metrics).
3. If the player speaks while the character is answering or its audio is still playing
   (barge-in), the turn is cancelled at once (generation stops), ``interrupted`` says
   what the player heard, and the session stores that much of the answer, marked
   interrupted. What was heard is reckoned from when the first audio was sent, as if the
   client plays it as it comes, unless the client reports its playback position.
   A line cut off before any of its answer was heard is carried into the next line, as
   one line with a pause in it.

Recordings are transcribed and dropped; ``keep`` is called with each line's WAV only
when the operator keeps recordings.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ocak.characters.api import AudioSegment, SpeechFormat, TurnOut
from ocak.characters.events import (
    AudioReset,
    Reset,
    Speaking,
    Spoken,
    TextPiece,
    TurnDone,
    TurnEvent,
    TurnInput,
)
from ocak.characters.service import CharacterService
from ocak.characters.voice import hear, speakers, voiced
from ocak.engines.speech.codec import WHISPER_RATE, wav_header
from ocak.engines.speech.vad import StreamingVAD
from ocak.errors import OcakError
from ocak.serving.audio import AudioServing
from ocak.serving.context import CallContext

Send = Callable[[dict[str, Any]], Awaitable[None]]
Track = Callable[[AsyncGenerator[TurnEvent, None], CallContext], AsyncGenerator[TurnEvent, None]]


@dataclass(frozen=True, slots=True)
class LiveOptions:
    character: str | None = None
    silence_ms: int = 500
    max_line_ms: int = 60_000
    voice_format: SpeechFormat = "pcm"
    temperature: float | None = None
    seed: int | None = None


@dataclass(slots=True)
class _Answer:
    """The turn being answered, and what of it the player has been sent."""

    inp: TurnInput | None = None
    character: str | None = None
    seq: int | None = None  # once the turn is stored
    segments: list[AudioSegment] = field(default_factory=list)
    first_audio: float | None = None  # when the first audio was sent (monotonic)
    played: tuple[float, int] | None = None  # (when, position ms) the client last reported

    def position_ms(self, now: float) -> float:
        if self.played is not None:
            return self.played[1] + (now - self.played[0]) * 1000
        return 0.0 if self.first_audio is None else (now - self.first_audio) * 1000

    def audio_ms(self) -> int:
        return sum(s.duration_ms for s in self.segments)

    def heard(self, now: float) -> str:
        """The words the player has heard by ``now``."""
        pos = self.position_ms(now)
        parts = []
        for s in self.segments:
            if pos >= s.offset_ms + s.duration_ms:
                parts.append(s.text)
                continue
            said = [w.word for w in s.words if w.end_ms <= pos - s.offset_ms]
            if said:
                parts.append(" ".join(said) + "—")
            break
        return " ".join(parts)


class Conversation:
    """One live conversation (see the module doc)."""

    def __init__(
        self,
        service: CharacterService,
        audio: AudioServing,
        session_id: str,
        *,
        context: Callable[[], CallContext],
        authorize: Callable[[CallContext, str], None],
        track: Track,
        finish: Callable[[CallContext], None],
        send: Send,
        options: LiveOptions,
        keep: Callable[[bytes], None] | None = None,
    ) -> None:
        self.service = service
        self.audio = audio
        self.session_id = session_id
        self.context = context
        self.authorize = authorize
        self.track = track
        self.finish = finish
        self._send = send
        self.options = options
        self.keep = keep
        self.vad = StreamingVAD(silence_ms=options.silence_ms)
        self._task: asyncio.Task[None] | None = None
        self._answer = _Answer()
        self._carry = ""  # a line cut off before its answer was heard
        self._lock = asyncio.Lock()

    async def send(self, message: dict[str, Any]) -> None:
        async with self._lock:
            await self._send(message)

    # -- from the client ------------------------------------------------------------

    async def microphone(self, pcm: bytes) -> None:
        """16 kHz 16-bit mono PCM from the player's microphone."""
        if len(pcm) % 2:
            raise OcakError("Microphone audio must be 16-bit PCM: an odd number of bytes came.")
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        for event in self.vad.feed(samples):
            if event.kind == "start":
                await self.send({"type": "speech_started", "at_ms": event.at_ms})
                if self.answering():
                    await self.barge_in()
            else:
                await self.send({"type": "speech_stopped", "at_ms": event.at_ms})
                await self.end_of_speech()
        if self.vad.speaking and self.vad.heard_ms() >= self.options.max_line_ms:
            await self.push_to_talk_released()

    async def push_to_talk_released(self) -> None:
        """The client says the line has ended (or it is as long as a line may be)."""
        ended = self.vad.end()
        if ended is not None:
            await self.send({"type": "speech_stopped", "at_ms": ended.at_ms})
        await self.end_of_speech()

    async def end_of_speech(self) -> None:
        """The player's line has ended (the VAD's silence, or push-to-talk released)."""
        samples = self.vad.utterance()
        if samples.size < WHISPER_RATE // 10:
            return  # under 0.1 s: nothing to transcribe
        pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        await self._start(wav_header(WHISPER_RATE, len(pcm)) + pcm, None)

    async def typed(self, text: str) -> None:
        """A line the player typed instead of saying."""
        if self.answering():
            await self.barge_in()
        await self._start(None, text)

    def played(self, position_ms: int) -> None:
        """The client's playback position in the current answer's audio."""
        self._answer.played = (time.monotonic(), max(0, position_ms))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # -- the character's answer ------------------------------------------------------

    def answering(self) -> bool:
        """Whether the character is still answering: generating, or its audio playing."""
        if self._task is not None and not self._task.done():
            return True
        a = self._answer
        return a.first_audio is not None and a.position_ms(time.monotonic()) < a.audio_ms()

    async def barge_in(self) -> None:
        """Stop the answer now; store what the player heard of it."""
        now = time.monotonic()
        answer = self._answer
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None
        heard = answer.heard(now)
        self._answer = _Answer()
        if answer.character is None or (not heard and answer.seq is None):
            # nothing of the answer reached the player: the line goes on in the next one
            if answer.inp is not None and answer.inp.text:
                self._carry = answer.inp.text
            await self.send({"type": "interrupted", "character": answer.character, "heard": ""})
            return
        try:
            await self.service.cut(
                self.session_id,
                answer.character,
                heard,
                seq=answer.seq,
                inp=None if answer.seq is not None else answer.inp,
            )
        except OcakError as exc:
            await self.send({"type": "error", **exc.to_dict()})
        await self.send({"type": "interrupted", "character": answer.character, "heard": heard})

    async def _start(self, recording: bytes | None, text: str | None) -> None:
        if self._task is not None and not self._task.done():
            await self.barge_in()
        self._answer = _Answer()
        self._task = asyncio.create_task(self._run(recording, text))

    async def _run(self, recording: bytes | None, text: str | None) -> None:
        ctx = self.context()
        answer = self._answer
        try:
            spoken = recording is not None
            if recording is not None:
                if self.keep is not None:
                    self.keep(recording)
                text = await hear(self.audio, ctx, recording)
                await self.send({"type": "transcript", "text": text})
            assert text is not None
            if self._carry:
                text, self._carry = f"{self._carry} {text}", ""
            inp = TurnInput(
                text=text,
                spoken=spoken,
                character=self.options.character,
                temperature=self.options.temperature,
                seed=self.options.seed,
                request_id=ctx.record.request_id,
            )
            answer.inp = inp

            def authorize(model: str) -> None:
                self.authorize(ctx, model)

            turn = self.service.turn(
                self.session_id, inp, authorize=authorize, local_only=ctx.local_only
            )
            choose = speakers(
                self.service, self.audio, ctx, self.session_id, self.options.voice_format
            )
            events = self.track(voiced(turn, choose), ctx)
            try:
                async for event in events:
                    await self._relay(event, answer)
            finally:
                await events.aclose()
        except OcakError as exc:
            ctx.record.fail(exc.status, exc.code)
            await self.send({"type": "error", **exc.to_dict()})
        except asyncio.CancelledError:
            ctx.record.status = "cancelled"
            raise
        finally:
            ctx.record.ended = time.monotonic()
            self.finish(ctx)

    async def _relay(self, event: TurnEvent, answer: _Answer) -> None:
        if isinstance(event, Speaking):
            answer.character = event.character
            await self.send({"type": "speaker", "character": event.character, "name": event.name})
        elif isinstance(event, TextPiece):
            await self.send({"type": "text", "delta": event.text})
        elif isinstance(event, Spoken):
            if answer.first_audio is None:
                answer.first_audio = time.monotonic()
            answer.segments.append(event.segment)
            await self.send({"type": "audio", **event.segment.model_dump()})
        elif isinstance(event, AudioReset):
            answer.segments.clear()
            answer.first_audio = None
            await self.send({"type": "audio_reset", "reason": event.reason})
        elif isinstance(event, Reset):
            await self.send({"type": "reset", "reason": event.reason})
        elif isinstance(event, TurnDone):
            if isinstance(event.turn, TurnOut):
                answer.seq = event.turn.seq
            await self.send({"type": "done", "turn": event.turn.model_dump()})
