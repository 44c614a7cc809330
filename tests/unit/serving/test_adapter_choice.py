"""Choosing LoRA adapters: the model-name form (``BASE@ADAPTER:SCALE``), an adapter's own
name, the request field, and where they cannot go (a remote target, a missing adapter).
The fake engine answers with the adapters it was handed, files included."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gateway_stubs import remote_target
from ocak.config import Settings
from ocak.engines.base import Engine
from ocak.engines.fake import FakeEngine
from ocak.engines.registry import AdapterFile, EngineRegistry
from ocak.errors import InvalidRequest, ModelNotFound, NotFound
from ocak.gateway.adapters import merge, split_name
from ocak.gateway.router import Alias, LocalTarget, Router
from ocak.protocol.generation import Adapter, GenerationRequest, Message, TextDelta
from ocak.protocol.openai import ChatCompletionRequest
from ocak.providers.errors import TargetCannot
from ocak.serving.service import ModelServing


def test_a_model_name_carries_adapters_and_scales() -> None:
    assert split_name("base") == ("base", ())
    assert split_name("base@pirate") == ("base", (Adapter("pirate"),))
    assert split_name("owner/repo:Q4_K_M@pirate:0.5,knight:-1") == (
        "owner/repo:Q4_K_M",
        (Adapter("pirate", 0.5), Adapter("knight", -1.0)),
    )
    assert split_name("base@owner/lora:v2") == ("base", (Adapter("owner/lora:v2"),))  # a tag
    for bad in ("@pirate", "base@", "base@:0.5", "base@pirate:inf", "base@pirate:11"):
        with pytest.raises(InvalidRequest):
            split_name(bad)


def test_a_later_choice_of_the_same_adapter_sets_its_scale() -> None:
    first = (Adapter("pirate", 0.5), Adapter("knight"))
    assert merge(first, (Adapter("pirate", 2.0), Adapter("elf"))) == (
        Adapter("pirate", 2.0),
        Adapter("knight"),
        Adapter("elf"),
    )


def test_the_request_field_is_checked() -> None:
    base: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    body = ChatCompletionRequest.model_validate({**base, "adapters": [{"name": "pirate"}]})
    assert body.generation_request().adapters == (Adapter("pirate", 1.0),)
    for bad in (
        [{"name": "pirate", "scale": 10.5}],
        [{"name": "pirate", "scale": "nan"}],
        [{"name": ""}],
        [{"name": "pirate", "weight": 1}],
        [{"name": f"a{i}"} for i in range(9)],
    ):
        with pytest.raises(ValidationError):
            ChatCompletionRequest.model_validate({**base, "adapters": bad})


class Store:
    """A catalog with two adapters and no models of its own."""

    def __init__(self, folder: Path) -> None:
        self.files = [
            AdapterFile("pirate", folder / "pirate.gguf", base="base"),
            AdapterFile("knight", folder / "knight.gguf"),
        ]

    def names(self) -> list[str]:
        return []

    def build(self, name: str) -> Engine | None:
        return None

    def adapters(self) -> list[AdapterFile]:
        return self.files


def shown(request: GenerationRequest) -> str:
    return " ".join(f"{a.name}:{a.scale}:{Path(a.path or '?').name}" for a in request.adapters)


def serve(tmp_path: Path, model: str, *adapters: Adapter) -> str:
    registry = EngineRegistry([FakeEngine("base", script=shown)], catalog=Store(tmp_path))
    cloud = remote_target("cloud/m")
    aliases = {
        "cloud": Alias("cloud", [cloud]),
        "mixed": Alias("mixed", [remote_target("cloud/m"), LocalTarget(name="b", engine="base")]),
    }
    router = Router(aliases, registry)
    serving = ModelServing(Settings(data_dir=tmp_path), None, registry, router)  # type: ignore[arg-type]
    request = GenerationRequest(
        model=model, messages=[Message("user", "hi")], max_tokens=10, adapters=adapters
    )

    async def main() -> str:
        out = [e.text async for e in serving.generate(request) if isinstance(e, TextDelta)]
        return "".join(out)

    return asyncio.run(main())


def test_adapters_reach_the_local_engine_with_their_files(tmp_path: Path) -> None:
    assert serve(tmp_path, "base@pirate:0.5") == "pirate:0.5:pirate.gguf"
    assert serve(tmp_path, "pirate") == "pirate:1.0:pirate.gguf"  # its manifest's base
    both = serve(tmp_path, "base@pirate:0.5", Adapter("pirate", 2.0), Adapter("knight"))
    assert both == "pirate:2.0:pirate.gguf knight:1.0:knight.gguf"
    # An alias's remote targets cannot apply them: its local target serves.
    assert serve(tmp_path, "mixed@knight") == "knight:1.0:knight.gguf"


def test_where_adapters_cannot_go_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="BASE@knight"):
        serve(tmp_path, "knight")  # no base in its manifest
    with pytest.raises(NotFound, match="No LoRA adapter 'nope'") as missing:
        serve(tmp_path, "base@nope")
    assert missing.value.param == "adapters" and missing.value.code == "adapter_not_found"
    with pytest.raises(InvalidRequest, match="no local target"):
        serve(tmp_path, "cloud@pirate")
    with pytest.raises(TargetCannot, match="remote provider"):
        serve(tmp_path, "cloud", Adapter("pirate"))
    with pytest.raises(ModelNotFound):
        serve(tmp_path, "nothing@pirate")


def test_metrics_label_stored_names_only(tmp_path: Path) -> None:
    registry = EngineRegistry([FakeEngine("base")], catalog=Store(tmp_path))
    router = Router({}, registry)
    assert router.knows("base") and router.knows("pirate")
    assert not router.knows("base@pirate:0.37")  # the client's to vary: not a label
