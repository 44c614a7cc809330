"""Engine kinds and provider types come from a registry (entry points, or registered
in-process), not an if/elif: the fake engine is found exactly as the real ones are."""

from __future__ import annotations

from pathlib import Path

import pytest

from ocak.config import Settings
from ocak.engines.base import Engine
from ocak.engines.factory import ENGINES, ModelSpecError, engine_for
from ocak.engines.fake import FakeEngine
from ocak.errors import InvalidRequest
from ocak.gateway.service import PROVIDERS
from ocak.models.store import ModelSpec
from ocak.plugins import Registry, UnknownKind
from ocak.protocol.generation import Adapter, GenerationRequest
from ocak.providers.openai_compat import OpenAICompatible
from ocak.providers.replicate import Replicate


def test_the_installed_entry_points_name_every_kind() -> None:
    assert {"llama.cpp", "ctranslate2", "fake"} <= set(ENGINES.names())
    assert PROVIDERS.get("openai") is OpenAICompatible
    assert PROVIDERS.get("replicate") is Replicate


def test_the_fake_engine_is_built_through_the_registry(tmp_path: Path) -> None:
    engine = engine_for(ModelSpec("echo", tmp_path, "fake"), Settings(ctx_size=512))
    assert isinstance(engine, FakeEngine) and engine.model_id == "echo"
    assert engine.info().context_length == 512


def test_an_unknown_kind_names_itself(tmp_path: Path) -> None:
    with pytest.raises(ModelSpecError, match="kind onnx"):
        engine_for(ModelSpec("x", tmp_path, "onnx"), Settings())
    with pytest.raises(UnknownKind, match="known: "):
        Registry[object]("ocak.engines").get("onnx")  # type: ignore[type-var]


def test_a_builder_registered_in_process_is_used(tmp_path: Path) -> None:
    registry: Registry[object] = Registry("ocak.test-kinds")  # type: ignore[type-var]
    built: list[str] = []

    @registry.register("mine")
    def mine(model_id: str, path: Path, settings: Settings) -> Engine:
        built.append(model_id)
        return FakeEngine(model_id)

    assert registry.get("mine") is mine and registry.names() == ["mine"]
    ENGINES.register("mine-too")(mine)
    engine_for(ModelSpec("m", tmp_path, "mine-too"), Settings())
    assert built == ["m"]


def test_an_adapter_is_not_served_as_a_model(tmp_path: Path) -> None:
    spec = ModelSpec("pirate", tmp_path / "pirate.gguf", "llama.cpp", kind="adapter")
    with pytest.raises(ModelSpecError, match="BASE@pirate"):
        engine_for(spec, Settings())


def test_ctranslate2_refuses_adapters_by_name() -> None:
    from ocak.engines.ctranslate2.engine import refuse

    request = GenerationRequest(model="m", prompt="hi", adapters=(Adapter("pirate", 1.0, "x"),))
    with pytest.raises(InvalidRequest, match=r"CTranslate2 engine.*pirate") as refused:
        refuse(request)
    assert refused.value.param == "adapters"
