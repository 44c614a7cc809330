"""Piper voices are models: ``ocak models add VOICE.onnx`` stores the voice with its config
(kind text-to-speech, engine piper), refuses a voice without its config, and ``ocak
models list`` shows the bundled voice models beside the stored ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ocak.cli.main import app
from ocak.cli.models import listed
from ocak.config import ConfigError, Settings
from ocak.config.gateway import AliasConfig
from ocak.engines.registry import EngineRegistry
from ocak.engines.speech.tts import bundled_voices
from ocak.gateway.service import build_gateway
from ocak.models.add import add_file
from ocak.models.store import ModelFileError, ModelStore
from ocak.models.voices import stored_voices

CONFIG = {"audio": {"sample_rate": 22050}, "espeak": {"voice": "en-us"}, "license": "MIT"}


def voice_files(folder: Path, name: str = "en_GB-test-low") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / f"{name}.onnx"
    model.write_bytes(b"\x08\x07onnx-weights" * 100)
    (folder / f"{name}.onnx.json").write_text(json.dumps(CONFIG))
    return model


def test_a_voice_is_stored_with_its_config(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    source = voice_files(tmp_path / "download")
    manifest = add_file(store, source, name="narrator")
    assert (manifest.name, manifest.kind, manifest.engine) == (
        "narrator",
        "text-to-speech",
        "piper",
    )
    assert manifest.license == "MIT"
    assert sorted(f.path for f in manifest.files) == [
        "en_GB-test-low.onnx",
        "en_GB-test-low.onnx.json",
    ]
    [voice] = stored_voices(store)
    assert voice.name == "narrator" and voice.path.read_bytes() == source.read_bytes()
    config = voice.path.with_name(voice.path.name + ".json")  # where Piper looks for it
    assert json.loads(config.read_text()) == CONFIG
    assert add_file(store, voice_files(tmp_path / "other")).name == "en_GB-test-low"  # its stem


def test_a_voice_without_its_config_is_refused_with_the_reason(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    source = voice_files(tmp_path / "download")
    source.with_name(source.name + ".json").unlink()
    with pytest.raises(ModelFileError, match=r"without its config: put en_GB-test-low\.onnx\.json"):
        add_file(store, source)
    source.with_name(source.name + ".json").write_text("{}")
    with pytest.raises(ModelFileError, match="not a Piper voice config"):
        add_file(store, source)
    source.with_name(source.name + ".json").write_text(json.dumps(CONFIG))
    with pytest.raises(ModelFileError, match="takes no base model"):
        add_file(store, source, base="default")
    with pytest.raises(ModelFileError, match="no such file"):
        add_file(store, tmp_path / "missing.onnx")
    assert store.models() == [] and store.partials() == []


def test_models_list_shows_bundled_and_stored_voices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OCAK_DATA_DIR", str(tmp_path))
    # reading the default GGUF's quantization takes seconds (gguf's reader): not the point here
    monkeypatch.setattr("ocak.cli.models.stored_quantization", lambda path, engine: "Q4_1")
    settings = Settings.load()
    add_file(ModelStore(settings.model_dir), voice_files(tmp_path / "dl"), name="narrator")
    rows = {r[0]: r for r in listed(settings)}
    assert rows["default"][1:3] == ("chat", "llama.cpp") and rows["default"][5] == "bundled"
    assert rows["joe"][1:3] == ("text-to-speech", "piper") and rows["joe"][5] == "bundled"
    assert rows["whisper-tiny.en"][1:3] == ("speech-to-text", "faster-whisper")
    assert rows["whisper-tiny.en"][5] == "bundled"
    assert rows["narrator"][1:3] == ("text-to-speech", "piper") and rows["narrator"][5] == "store"
    out = CliRunner().invoke(app, ["models", "list"], env={"COLUMNS": "240"})
    assert out.exit_code == 0, out.output
    line = next(x for x in out.output.splitlines() if "narrator" in x)
    assert "text-to-speech" in line and "store" in line
    added = CliRunner().invoke(app, ["models", "add", str(tmp_path / "nothing.onnx")])
    assert added.exit_code != 0 and "no such file" in added.output


def test_the_server_offers_stored_voices_and_aliases_may_name_speech_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ocak.serving.audio import SpeechModels

    monkeypatch.setenv("OCAK_DATA_DIR", str(tmp_path))
    settings = Settings.load()
    add_file(ModelStore(settings.model_dir), voice_files(tmp_path / "dl"), name="narrator")
    speech = SpeechModels.bundled(settings)
    assert set(speech.voices) == {v.id for v in bundled_voices()} | {"narrator"}
    assert speech.voice("tts-1", "narrator").voice.path.name == "en_GB-test-low.onnx"
    settings.models = {
        "ears": AliasConfig.model_validate({"targets": [{"local": "whisper-tiny.en"}]})
    }
    with pytest.raises(ConfigError, match=r"no local model 'whisper-tiny\.en'"):
        build_gateway(settings, EngineRegistry(), {})
    gw = build_gateway(settings, EngineRegistry(), {}, speech=speech.local_names())
    assert [t.name for t in gw.router.aliases["ears"].targets] == ["local/whisper-tiny.en"]
