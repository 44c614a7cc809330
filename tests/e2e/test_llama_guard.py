"""The AMX guard for real: the installed llama.cpp probed, and a guarded load of the default
model answering as an unguarded one does (the decision faked, the load real).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import llama_cpp
import pytest

from ocak.engines.llamacpp import model as llama_model
from ocak.engines.llamacpp.engine import LlamaCppEngine
from ocak.models.store import default_model_path
from ocak.protocol.generation import GenerationRequest, TextDelta
from ocak.system.cpu import read_cpu
from ocak.system.llama_build import assess, probe
from system_fakes import (
    EPYC,
    INFO_EPYC_NATIVE,
    INFO_XEON_NATIVE,
    XEON,
)


def test_the_installed_llama_cpp_can_be_probed_in_a_child_process() -> None:
    found = probe()
    assert found.ok, found.error
    assert found.version == llama_cpp.__version__
    assert "CPU :" in found.system_info and found.system_info == llama_model.loaded_system_info()


def test_the_installed_llama_cpp_never_runs_its_amx_kernels_here() -> None:
    """Whatever this machine is: the library fits it, or the guard is on."""
    verdict = assess(llama_model.loaded_system_info(), read_cpu())
    assert not verdict.unsupported
    assert not verdict.amx_compiled or verdict.amx_guard


async def _greedy(engine: LlamaCppEngine) -> str:
    await engine.load()
    assert engine.state == "ready", engine.error
    request = GenerationRequest(
        model="t", prompt="The capital of France is", max_tokens=8, temperature=0.0
    )
    try:
        parts = [e.text async for e in engine.generate(request) if isinstance(e, TextDelta)]
    finally:
        await engine.close()
    return "".join(parts)


def _load_spy(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Record use_extra_bufts of every model load (then load for real)."""
    seen: list[bool] = []
    real = llama_cpp.llama_model_load_from_file

    def spy(path: bytes, params: Any) -> Any:
        seen.append(bool(params.use_extra_bufts))
        return real(path, params)

    monkeypatch.setattr(llama_model.C, "llama_model_load_from_file", spy)
    return seen


def _engine() -> LlamaCppEngine:
    return LlamaCppEngine("t", default_model_path(), ctx_size=256, parallel=1, threads=2)


def test_the_guard_loads_without_extra_buffers_says_so_once_and_answers_the_same(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    seen = _load_spy(monkeypatch)
    monkeypatch.setattr(llama_model, "_extra_bufts", None)
    monkeypatch.setattr(llama_model, "loaded_system_info", lambda: INFO_EPYC_NATIVE)
    monkeypatch.setattr(llama_model, "read_cpu", lambda: EPYC)
    plain = asyncio.run(_greedy(_engine()))

    monkeypatch.setattr(llama_model, "_extra_bufts", None)
    monkeypatch.setattr(llama_model, "loaded_system_info", lambda: INFO_XEON_NATIVE)
    monkeypatch.setattr(llama_model, "read_cpu", lambda: XEON)
    with caplog.at_level(logging.WARNING, logger="ocak.llamacpp"):
        guarded = asyncio.run(_greedy(_engine()))
        asyncio.run(_greedy(_engine()))  # a second model: the decision is not logged again
    assert seen == [True, False, False]
    lines = [r.getMessage() for r in caplog.records if "AMX" in r.getMessage()]
    assert len(lines) == 1 and "use_extra_bufts=False" in lines[0]
    assert guarded and guarded == plain  # Q4_1 is not repacked: the same greedy text
