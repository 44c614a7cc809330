"""A live voice conversation over a WebSocket: ``/v1/sessions/{id}/voice``.

The client sends the microphone as binary frames (16 kHz, 16-bit little-endian mono PCM,
any frame size; 20-100 ms is usual) and JSON text frames to steer; ocak sends JSON text
frames. The protocol is in docs/voice.md; the logic in ``characters.conversation``. The
key goes in the ``Authorization`` header as for HTTP (``AuthMiddleware`` refuses a
WebSocket without one before it is accepted); each answer is a request record of its own.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect

from ocak.characters.api import SpeechFormat
from ocak.characters.conversation import Conversation, LiveOptions
from ocak.characters.recordings import Recordings
from ocak.errors import InvalidRequest, OcakError
from ocak.protocol.record import RequestRecord, run_sinks
from ocak.providers.base import REQUIRE_LOCALITY
from ocak.server.routes.characters import tracked
from ocak.serving.audio import AudioServing
from ocak.serving.context import CallContext

router = APIRouter(tags=["characters"])


@router.websocket("/v1/sessions/{session_id}/voice")
async def voice(
    ws: WebSocket,
    session_id: str,
    character: str | None = Query(None, description="Who answers (default: turn-taking)."),
    silence_ms: int = Query(500, ge=200, le=3000, description="Quiet that ends a line."),
    voice_format: SpeechFormat = Query("pcm", description="Each sentence's audio format."),
    seed: int | None = Query(None),
    temperature: float | None = Query(None, ge=0.0, le=2.0),
) -> None:
    """Talk with a session's characters (see the module doc and docs/voice.md)."""
    state = ws.app.state.ocak
    settings = state.settings
    key = getattr(ws.state, "key", None)
    asked_local = ws.headers.get(REQUIRE_LOCALITY, "").strip().lower() == "local"
    await ws.accept()
    try:
        state.characters.require_session(session_id)
    except OcakError as exc:
        await ws.send_json({"type": "error", **exc.to_dict()})
        await ws.close(code=1008, reason=exc.message[:120])
        return
    path = ws.url.path

    def context() -> CallContext:
        record = RequestRecord(f"req_{uuid.uuid4().hex[:20]}", "WS", path, stream=True)
        if key is not None:
            record.key_name, record.key_id = key.name, key.id
        return CallContext(record, key, asked_local=asked_local)

    def finish(ctx: CallContext) -> None:
        run_sinks([*state.sinks, *state.late_sinks], ctx.record)

    kept = Recordings.in_data_dir(settings.data_dir, keep=settings.keep_recordings)
    live = Conversation(
        state.characters,
        state.audio,
        session_id,
        context=context,
        authorize=state.serving.authorize,
        track=lambda events, ctx: tracked(events, ctx.record),
        finish=finish,
        send=ws.send_json,
        options=LiveOptions(
            character=character,
            silence_ms=silence_ms,
            max_line_ms=settings.max_live_seconds * 1000,
            voice_format=voice_format,
            temperature=temperature,
            seed=seed,
        ),
        keep=(lambda wav: keep(kept, session_id, wav)) if kept.enabled else None,
    )
    # load the voice and the transcriber now, not when the player has just spoken
    rate = await asyncio.to_thread(_warm, state.audio)
    await ws.send_json(
        {
            "type": "ready",
            "session_id": session_id,
            "input": {"format": "pcm16", "sample_rate": 16000, "channels": 1},
            "output": {"format": voice_format, "sample_rate": rate},
        }
    )
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            try:
                if message.get("bytes") is not None:
                    await live.microphone(message["bytes"])
                elif message.get("text") is not None:
                    await _control(live, message["text"])
            except OcakError as exc:
                await live.send({"type": "error", **exc.to_dict()})
    except WebSocketDisconnect:
        pass
    finally:
        await live.close()


async def _control(live: Conversation, text: str) -> None:
    """One JSON message from the client."""
    try:
        data: Any = json.loads(text)
    except ValueError:
        raise InvalidRequest("A text frame must be a JSON object.", param="message") from None
    kind = data.get("type") if isinstance(data, dict) else None
    if kind == "text":
        line = data.get("text")
        if not isinstance(line, str) or not line.strip() or len(line) > 4000:
            raise InvalidRequest("'text' must be a line of 1-4000 characters.", param="text")
        await live.typed(line.strip())
    elif kind == "end_of_speech":
        await live.push_to_talk_released()
    elif kind == "interrupt":
        if live.answering():
            await live.barge_in()
    elif kind == "playback":
        position = data.get("position_ms")
        if not isinstance(position, int) or isinstance(position, bool):
            raise InvalidRequest("'position_ms' must be an integer.", param="position_ms")
        live.played(position)
    else:
        raise InvalidRequest(
            f"Unknown message type {kind!r}: send text, end_of_speech, interrupt or playback.",
            param="type",
        )


def keep(kept: Recordings, session_id: str, wav: bytes) -> None:
    kept.keep(session_id, wav)


def _warm(audio: AudioServing) -> int:
    """Load the first voice and transcriber; the voice's sample rate (0: no voice)."""
    for whisper in list(audio.catalog.transcribers.values())[:1]:
        whisper.load()
    voice = next(iter(audio.catalog.voices.values()), None)
    return 0 if voice is None else voice.sample_rate
