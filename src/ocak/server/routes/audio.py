"""``POST /v1/audio/speech`` and ``POST /v1/audio/transcriptions`` (OpenAI-compatible),
through ``serving/audio.py``: the local speech models, or a gateway alias's targets.
The response says which target served (``x-ocak-backend``) and where (``x-ocak-locality``);
a hosted transcript comes back as the upstream wrote it."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from ocak.engines.speech.codec import MEDIA_TYPES
from ocak.errors import InvalidRequest, OcakError
from ocak.protocol.audio import SpeechRequest, TranscriptFormat, subtitles
from ocak.server.proxy import http_context, record_headers
from ocak.server.routes.chat import ERRORS
from ocak.server.services import get_state
from ocak.server.streaming import SSE_HEADERS, sse, sse_error
from ocak.serving.audio import Relayed

router = APIRouter(tags=["audio"])


@router.post("/v1/audio/speech", responses=ERRORS)
async def speech(body: SpeechRequest, request: Request) -> StreamingResponse:
    """Speak ``input`` in ``voice``; the audio streams a sentence at a time."""
    audio = get_state(request).audio
    ctx = http_context(request)
    chunks = await audio.speech(
        ctx,
        model=body.model,
        text=body.input,
        voice=body.voice,
        fmt=body.response_format,
        speed=body.speed,
        instructions=body.instructions,
        sent=body.model_dump(exclude_unset=True),
    )
    headers = record_headers(ctx.record)
    if body.stream_format == "sse":
        return StreamingResponse(
            _sse(chunks), media_type="text/event-stream", headers={**SSE_HEADERS, **headers}
        )
    return StreamingResponse(chunks, media_type=MEDIA_TYPES[body.response_format], headers=headers)


async def _sse(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """OpenAI's speech events: ``speech.audio.delta`` (base64 audio), then
    ``speech.audio.done``."""
    try:
        async for chunk in chunks:
            yield sse({"type": "speech.audio.delta", "audio": base64.b64encode(chunk).decode()})
    except OcakError as exc:
        yield sse_error(exc)
        return
    yield sse({"type": "speech.audio.done"})


@router.post("/v1/audio/transcriptions", responses=ERRORS)
async def transcriptions(
    request: Request,
    file: Annotated[UploadFile, File(description="The audio: wav, mp3, ogg, flac, m4a, webm...")],
    model: Annotated[str, Form(min_length=1)],
    language: Annotated[str | None, Form(max_length=16)] = None,
    prompt: Annotated[str | None, Form(max_length=4096)] = None,
    response_format: Annotated[TranscriptFormat, Form()] = "json",
    temperature: Annotated[float, Form(ge=0.0, le=1.0)] = 0.0,
    timestamp_granularities: Annotated[
        list[str] | None, Form(alias="timestamp_granularities[]")
    ] = None,
) -> Any:
    """Transcribe an audio file (OpenAI-compatible response formats)."""
    granularities = set(timestamp_granularities or [])
    if granularities - {"word", "segment"}:
        raise InvalidRequest(
            "timestamp_granularities may hold 'word' and 'segment'.",
            param="timestamp_granularities",
        )
    if granularities and response_format != "verbose_json":
        raise InvalidRequest(
            "timestamp_granularities needs response_format verbose_json.",
            param="timestamp_granularities",
        )
    data = await file.read()
    ctx = http_context(request)
    result = await get_state(request).audio.transcribe(
        ctx,
        model=model,
        data=data,
        language=language,
        prompt=prompt,
        words="word" in granularities,
        temperature=temperature,
        response_format=response_format,
        granularities=sorted(granularities),
        filename=file.filename or "audio",
        content_type=file.content_type,
    )
    headers = record_headers(ctx.record)
    if isinstance(result, Relayed):
        return Response(result.raw, media_type=result.media_type, headers=headers)
    if response_format == "text":
        return PlainTextResponse(result.text + "\n", headers=headers)
    if response_format in ("srt", "vtt"):
        return PlainTextResponse(subtitles(result.segments, response_format), headers=headers)
    if response_format == "json":
        return JSONResponse({"text": result.text}, headers=headers)
    out: dict[str, Any] = {
        "task": "transcribe",
        "language": _language_name(result.language),
        "duration": result.duration,
        "text": result.text,
    }
    if not granularities or "segment" in granularities:
        out["segments"] = [
            {"id": s.id, "start": s.start, "end": s.end, "text": s.text} for s in result.segments
        ]
    if "word" in granularities:
        out["words"] = [
            {"word": w.word.strip(), "start": w.start, "end": w.end}
            for s in result.segments
            for w in s.words
        ]
    return JSONResponse(out, headers=headers)


_NAMES = {"en": "english"}


def _language_name(code: str) -> str:
    """OpenAI's verbose_json names the language in full ("english")."""
    return _NAMES.get(code, code)
