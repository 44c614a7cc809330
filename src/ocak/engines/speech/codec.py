"""Audio in and out of ocak's speech engines, through PyAV (FFmpeg's codecs).

``decode`` turns an uploaded file in any common format (wav, mp3, ogg/opus, flac, m4a,
webm, ...) into 16 kHz mono float samples, what Whisper reads. ``Encoder`` turns 16-bit
PCM, a sentence at a time, into the bytes of OpenAI's speech formats (mp3, opus, aac,
flac, wav, pcm), handing out what each sentence completes so a response can stream.
"""

from __future__ import annotations

import io
import struct
from typing import TYPE_CHECKING, Literal, cast

import numpy as np

from ocak.errors import InvalidRequest

if TYPE_CHECKING:
    from av.audio.frame import AudioFrame
    from av.audio.stream import AudioStream

AudioFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
MEDIA_TYPES: dict[str, str] = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
# container and codec per format (opus in Ogg and AAC in ADTS, as OpenAI sends them)
_CODECS = {"mp3": ("mp3", "libmp3lame"), "opus": ("ogg", "libopus"), "aac": ("adts", "aac"),
           "flac": ("flac", "flac")}  # fmt: skip
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
WHISPER_RATE = 16000


class InvalidAudio(InvalidRequest):
    code = "invalid_audio"


def decode(data: bytes, *, param: str = "file") -> np.ndarray:
    """``data`` (any format FFmpeg reads) as 16 kHz mono float32 samples."""
    import av

    if not data:
        raise InvalidAudio("The audio file is empty.", param=param)
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise InvalidAudio("The file holds no audio stream.", param=param)
            resampler = av.AudioResampler(format="flt", layout="mono", rate=WHISPER_RATE)
            parts = []
            for frame in container.decode(audio=0):
                parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
            parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    except av.FFmpegError as exc:
        raise InvalidAudio(
            f"The audio file cannot be read ({exc.strerror or type(exc).__name__}): send wav, "
            "mp3, ogg/opus, flac, m4a or webm.",
            param=param,
        ) from None
    samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    if samples.size == 0:
        raise InvalidAudio("The audio file holds no samples.", param=param)
    return samples.astype(np.float32, copy=False)


def wav_header(sample_rate: int, data_bytes: int = 0xFFFFFFFF - 36) -> bytes:
    """A 16-bit mono WAV header; a stream whose length is unknown says the largest size
    (as OpenAI's streamed WAV does), which players read to the end."""
    return (
        b"RIFF"
        + struct.pack("<I", min(data_bytes + 36, 0xFFFFFFFF))
        + b"WAVE"
        + (b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16))
        + b"data"
        + struct.pack("<I", min(data_bytes, 0xFFFFFFFF))
    )


class Encoder:
    """16-bit mono PCM at ``sample_rate`` into ``fmt``, incrementally."""

    def __init__(self, fmt: AudioFormat, sample_rate: int) -> None:
        self.fmt = fmt
        self.sample_rate = sample_rate
        self._started = False
        if fmt in ("wav", "pcm"):
            return
        import av

        container_name, codec = _CODECS[fmt]
        self._buffer = io.BytesIO()
        self._container = av.open(self._buffer, mode="w", format=container_name)
        rate = sample_rate
        if fmt == "opus" and rate not in _OPUS_RATES:
            rate = 24000  # libopus takes only these rates
        self._stream = cast("AudioStream", self._container.add_stream(codec, rate=rate))
        self._stream.layout = "mono"
        self._resampler = av.AudioResampler(
            format=self._stream.codec_context.format.name, layout="mono", rate=rate
        )
        self._pts = 0

    def feed(self, pcm: bytes) -> bytes:
        """Encode ``pcm``; the bytes ready now."""
        if self.fmt == "pcm":
            return pcm
        if self.fmt == "wav":
            head = b"" if self._started else wav_header(self.sample_rate)
            self._started = True
            return head + pcm
        return self._encode(pcm)

    def finish(self) -> bytes:
        """The rest (the codec's last frames, the container's trailer)."""
        if self.fmt in ("wav", "pcm"):
            return b"" if self._started or self.fmt == "pcm" else wav_header(self.sample_rate, 0)
        out = self._encode(None)
        self._container.close()
        return out + self._drain()

    def _encode(self, pcm: bytes | None) -> bytes:
        import av

        frames: list[AudioFrame | None]
        if pcm is not None:
            samples = np.frombuffer(pcm, dtype=np.int16).reshape(1, -1)
            source = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            source.sample_rate = self.sample_rate
            frames = list(self._resampler.resample(source))
        else:
            frames = [*self._resampler.resample(None), None]  # None: flush the codec
        for frame in frames:
            if frame is not None:
                frame.pts = self._pts
                self._pts += frame.samples
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        return self._drain()

    def _drain(self) -> bytes:
        data = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        return data
