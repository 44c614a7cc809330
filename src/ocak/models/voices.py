"""Piper voices in the model store: ``ocak models add VOICE.onnx`` and finding them again.

A Piper voice is two files: the ONNX model and its config (``VOICE.onnx.json``: sample
rate, phoneme map, espeak voice). Piper reads the config from beside the model, so
both are stored together, under their own file names, with kind ``text-to-speech``
and engine ``piper``; the server offers each stored voice as ``voice: NAME`` of the
model ``piper`` (and OpenAI's ``tts-1``...).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ocak.models.manifest import Manifest, check_name, describe_files
from ocak.models.store import ModelFileError, ModelStore, StoredModel

PIPER = "piper"
VOICE_KIND = "text-to-speech"


def voice_config(model: Path) -> Path:
    """Where Piper looks for a voice's config: ``VOICE.onnx.json`` beside the model."""
    return model.with_name(model.name + ".json")


def add_voice(store: ModelStore, path: Path, *, name: str | None = None) -> Manifest:
    """Store the Piper voice ``path`` (``.onnx``, its ``.onnx.json`` beside it) as ``name``
    (default: the file's stem, ``en_US-joe-medium``)."""
    if not path.is_file():
        raise ModelFileError(f"no such file: {path}")
    config = voice_config(path)
    if not config.is_file():
        raise ModelFileError(
            f"{path.name} is a Piper voice without its config: put {config.name} (from the "
            "same download as the voice) beside it"
        )
    try:
        settings = json.loads(config.read_text(encoding="utf-8"))
        rate = settings["audio"]["sample_rate"]
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        raise ModelFileError(
            f"{config.name} is not a Piper voice config (it needs audio.sample_rate)"
        ) from None
    if not isinstance(rate, int) or rate <= 0:
        raise ModelFileError(f"{config.name}: audio.sample_rate must be a positive integer")
    name = check_name(name or path.stem)
    with store.staging(name) as folder:
        for old in folder.iterdir():  # a staging folder left by a killed add
            old.unlink() if old.is_file() else shutil.rmtree(old)
        shutil.copyfile(path, folder / path.name)
        shutil.copyfile(config, folder / config.name)
        manifest = Manifest(
            name=name,
            kind=VOICE_KIND,
            engine=PIPER,
            entry=path.name,
            files=describe_files(folder),
            license=settings.get("license") if isinstance(settings.get("license"), str) else None,
        )
        store.commit(folder, manifest)
    return manifest


def stored_voices(store: ModelStore) -> list[StoredModel]:
    """The store's Piper voices whose files are there (``path``: the ONNX model)."""
    return [
        m
        for m in store.models()
        if m.manifest.kind == VOICE_KIND
        and m.manifest.engine == PIPER
        and m.path.is_file()
        and voice_config(m.path).is_file()
    ]
