"""The gateway's config: validation with field paths and lines, references, keys from the
environment (a target without its key is left out, with a warning)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ocak.config import ConfigError, Settings
from ocak.engines.fake import FakeEngine
from ocak.engines.registry import EngineRegistry
from ocak.gateway.service import build_gateway

GOOD = """\
model: [default]
providers:
  groq: {type: openai, preset: groq, api_key_env: OCAK_TEST_GROQ}
  box: {type: openai, preset: ocak, base_url: "http://127.0.0.1:8001/v1"}
  lan: {type: openai, preset: vllm, base_url: "http://10.0.0.5:8000/v1/"}
  rep: {type: replicate, api_key_env: OCAK_TEST_REP}
routing: {retries: 2, timeouts: {connect: 3}}
models:
  assistant:
    targets:
      - {provider: groq, model: llama-3.3-70b-versatile, params: {temperature: 0.3}}
      - {local: default}
  private:
    locality: local
    targets: [{local: default}, {provider: box, model: default}]
  replicas:
    targets:
      - {provider: lan, model: a, rank: 0, weight: 3, timeouts: {first_token: 7}}
      - {provider: box, model: b, rank: 0}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ocak.yaml"
    path.write_text(text)
    return path


def engines() -> EngineRegistry:
    return EngineRegistry([FakeEngine("default")])


def test_a_good_config_builds_aliases_with_targets(tmp_path: Path) -> None:
    settings = Settings.load(write(tmp_path, GOOD))
    env = {"OCAK_TEST_GROQ": "gsk-abcdef", "OCAK_TEST_REP": "r8-abcdef"}
    gw = build_gateway(settings, engines(), env)
    aliases = gw.router.aliases
    assert [t.name for t in aliases["assistant"].targets] == [
        "groq/llama-3.3-70b-versatile",
        "local/default",
    ]
    first = aliases["assistant"].targets[0]
    assert first.params == {"temperature": 0.3}
    assert first.retries == 2
    assert first.timeouts.connect == 3  # routing default
    assert [t.rank for t in aliases["assistant"].targets] == [0, 1]  # rank = position
    lan = aliases["replicas"].targets[0]
    assert (lan.rank, lan.weight, lan.timeouts.first_token, lan.timeouts.connect) == (0, 3, 7, 3)
    assert lan.provider is not None and lan.provider.url == "http://10.0.0.5:8000/v1"
    assert [t.locality for t in aliases["private"].targets] == ["local", "verify"]
    assert lan.locality == "remote"


def test_a_target_without_its_key_is_left_out_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings.load(write(tmp_path, GOOD))
    with caplog.at_level(logging.WARNING, logger="ocak.gateway"):
        gw = build_gateway(settings, engines(), {})
    alias = gw.router.aliases["assistant"]
    assert [t.name for t in alias.targets] == ["local/default"]
    assert alias.skipped == ["groq/llama-3.3-70b-versatile"]
    assert any("OCAK_TEST_GROQ" in r.getMessage() for r in caplog.records)


def test_validation_errors_name_the_field_path_and_line(tmp_path: Path) -> None:
    text = GOOD.replace("preset: groq", "preset: grok").replace(
        "rank: 0, weight: 3", "rank: 0, weight: -3"
    )
    with pytest.raises(ConfigError) as info:
        Settings.load(write(tmp_path, text))
    message = info.value.message
    assert f"{tmp_path / 'ocak.yaml'}:3: providers.groq.preset: " in message
    assert "unknown preset 'grok'" in message
    assert ":18: models.replicas.targets.0.weight: " in message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("- {local: default}\n  private", ":12: models.assistant.targets.1: "),
        ("api_key_env: OCAK_TEST_GROQ}", ":3: providers.groq.api_key_env: "),
    ],
)
def test_more_problems_with_their_lines(tmp_path: Path, change: str, expected: str) -> None:
    broken = {
        "- {local: default}\n  private": "- {local: default, provider: groq}\n  private",
        "api_key_env: OCAK_TEST_GROQ}": 'api_key_env: "gsk-not-a-name!"}',
    }[change]
    with pytest.raises(ConfigError) as info:
        Settings.load(write(tmp_path, GOOD.replace(change, broken)))
    assert expected in info.value.message


def test_a_reference_to_nothing_names_its_line(tmp_path: Path) -> None:
    settings = Settings.load(write(tmp_path, GOOD.replace("{provider: groq,", "{provider: grq,")))
    with pytest.raises(ConfigError) as info:
        build_gateway(settings, engines(), {})
    assert ":11: models.assistant.targets.0.provider: no provider 'grq'" in info.value.message

    settings = Settings.load(write(tmp_path, GOOD.replace("- {local: default}", "- {local: big}")))
    with pytest.raises(ConfigError) as info:
        build_gateway(settings, engines(), {})
    assert ":12: models.assistant.targets.1.local: no local model 'big' (served: default)" in (
        info.value.message
    )


def test_a_local_only_alias_cannot_list_a_remote_provider(tmp_path: Path) -> None:
    text = GOOD.replace("{provider: box, model: default}]", "{provider: lan, model: x}]")
    settings = Settings.load(write(tmp_path, text))
    with pytest.raises(ConfigError) as info:
        build_gateway(settings, engines(), {})
    assert "models.private.targets.1: the alias is local-only but provider 'lan'" in (
        info.value.message
    )


def test_an_ocak_preset_off_loopback_is_not_local(tmp_path: Path) -> None:
    text = GOOD.replace('base_url: "http://127.0.0.1:8001/v1"', 'base_url: "http://10.1.1.1/v1"')
    settings = Settings.load(write(tmp_path, text))
    with pytest.raises(ConfigError, match=r"models\.private\.targets\.1: the alias is local-only"):
        build_gateway(settings, engines(), {})


def test_a_vouched_provider_is_local(tmp_path: Path) -> None:
    text = GOOD.replace("preset: vllm,", "preset: vllm, local: true,")
    gw = build_gateway(Settings.load(write(tmp_path, text)), engines(), {})
    assert gw.router.aliases["replicas"].targets[0].locality == "local"


def test_keys_are_read_from_the_environment_only(tmp_path: Path) -> None:
    text = GOOD.replace("api_key_env: OCAK_TEST_GROQ", "api_key: gsk-in-the-file")
    with pytest.raises(ConfigError, match=r"providers\.groq\.api_key: Extra inputs"):
        Settings.load(write(tmp_path, text))
