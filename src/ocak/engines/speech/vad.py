"""Voice activity detection on a live microphone stream: Silero VAD, the ONNX model
faster-whisper ships (no download), run 32 ms at a time with its state carried over.

``StreamingVAD.feed`` takes 16 kHz float samples as they arrive and says when speech
started (after ``min_speech_ms`` of it, so a cough or a click is not a barge-in) and
when it stopped (after ``silence_ms`` of quiet: the end of the player's line). It keeps
the utterance's samples, with a little audio from before the start, for the transcriber.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

RATE = 16000
WINDOW = 512  # samples per Silero step at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous window Silero v5+ reads with each step
PREROLL_MS = 300  # kept from before the detected start: speech begins softly


@functools.cache
def _session() -> Any:
    """The Silero model's ONNX session, loaded once per process."""
    import faster_whisper.utils
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    opts.inter_op_num_threads = opts.intra_op_num_threads = 1
    opts.log_severity_level = 4
    path = Path(faster_whisper.utils.get_assets_path()) / "silero_vad_v6.onnx"
    return onnxruntime.InferenceSession(
        str(path), providers=["CPUExecutionProvider"], sess_options=opts
    )


@dataclass(frozen=True, slots=True)
class VadEvent:
    kind: Literal["start", "end"]
    at_ms: int  # stream time of the event (start: where speech began)


class StreamingVAD:
    """See the module doc; one per microphone stream (it is not thread-safe)."""

    def __init__(
        self, *, silence_ms: int = 500, min_speech_ms: int = 160, threshold: float = 0.5
    ) -> None:
        self.silence_windows = max(1, silence_ms * RATE // 1000 // WINDOW)
        self.min_speech_windows = max(1, min_speech_ms * RATE // 1000 // WINDOW)
        self.threshold = threshold
        self._session = _session()
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros((1, CONTEXT), dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._windows = 0  # windows seen so far (the stream's clock)
        self._recent: list[np.ndarray] = []  # the last PREROLL_MS of windows
        self._speech: list[np.ndarray] = []
        self.speaking = False
        self._run = 0  # consecutive speech windows (before start) or quiet ones (after)

    def _probability(self, window: np.ndarray) -> float:
        x = np.concatenate([self._context, window.reshape(1, -1)], axis=1)
        inputs = {"input": x, "h": self._state[:1], "c": self._state[1:]}
        out, h, c = self._session.run(None, inputs)
        self._state = np.concatenate([h, c])
        self._context = x[:, -CONTEXT:]
        return float(np.asarray(out).reshape(-1)[0])

    def feed(self, samples: np.ndarray) -> list[VadEvent]:
        """Take more of the stream (16 kHz mono float32); the events it completes."""
        data = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])
        whole = len(data) // WINDOW * WINDOW
        self._pending = data[whole:]
        events = []
        for start in range(0, whole, WINDOW):
            window = data[start : start + WINDOW]
            event = self._step(window, self._probability(window))
            if event is not None:
                events.append(event)
            self._windows += 1
        return events

    def _step(self, window: np.ndarray, p: float) -> VadEvent | None:
        ms = self._windows * WINDOW * 1000 // RATE
        if not self.speaking:
            self._recent.append(window)
            keep = PREROLL_MS * RATE // 1000 // WINDOW + self.min_speech_windows
            del self._recent[:-keep]
            self._run = self._run + 1 if p >= self.threshold else 0
            if self._run >= self.min_speech_windows:
                self.speaking, self._run = True, 0
                self._speech = list(self._recent)
                began = ms - (self.min_speech_windows - 1) * WINDOW * 1000 // RATE
                return VadEvent("start", began)
            return None
        self._speech.append(window)
        # hysteresis: once speaking, only clear quiet counts against it
        self._run = self._run + 1 if p < self.threshold - 0.15 else 0
        if self._run >= self.silence_windows:
            self.speaking, self._run = False, 0
            self._recent = []
            return VadEvent("end", ms + WINDOW * 1000 // RATE)
        return None

    def heard_ms(self) -> int:
        """How long the speech going on (or last ended) has lasted so far."""
        return len(self._speech) * WINDOW * 1000 // RATE

    def end(self) -> VadEvent | None:
        """End the speech going on now (push-to-talk released, or a line too long)."""
        if not self.speaking:
            return None
        self.speaking, self._run, self._recent = False, 0, []
        return VadEvent("end", self._windows * WINDOW * 1000 // RATE)

    def utterance(self) -> np.ndarray:
        """The samples of the speech that last ended (or is going on), and forget them."""
        out = np.concatenate(self._speech) if self._speech else np.zeros(0, np.float32)
        self._speech = []
        return out
