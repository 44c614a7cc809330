"""OpenAI's audio wire types: the speech request, and the transcription's answer shapes
(json, text, srt, vtt, verbose_json)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ocak.errors import UnsupportedParameter


class SpeechRequest(BaseModel):
    """``POST /v1/audio/speech``."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    input: str = Field(description="The text to speak (at most 4,096 characters).")
    voice: str = Field(min_length=1, description="A voice id (GET /v1/models lists them).")
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    stream_format: Literal["audio", "sse"] = "audio"
    instructions: str | None = None

    def check(self) -> None:
        """Refuse, by name, what the local voices cannot honour."""
        if self.instructions:
            raise UnsupportedParameter(
                "instructions", "Piper voices speak as they were trained (no style prompts)"
            )


TranscriptFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]


def _clock(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def subtitles(segments: list[Any], fmt: Literal["srt", "vtt"]) -> str:
    """SubRip or WebVTT cues, a segment each."""
    sep = "," if fmt == "srt" else "."
    cues = []
    for n, s in enumerate(segments, 1):
        times = f"{_clock(s.start, sep)} --> {_clock(s.end, sep)}"
        cue = f"{times}\n{s.text.strip()}\n"
        cues.append(f"{n}\n{cue}" if fmt == "srt" else cue)
    body = "\n".join(cues)
    return f"WEBVTT\n\n{body}" if fmt == "vtt" else body
