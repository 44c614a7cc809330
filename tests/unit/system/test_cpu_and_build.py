"""CPU portability: reading the CPU, judging llama.cpp's build against it, the install script.

No one chooses which CPU a test machine has, so every decision is tested on
faked CPUs and faked system-info lines (tests/system_fakes.py).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from ocak.system.cpu import parse_cpuinfo, read_cpu
from ocak.system.llama_build import assess, guard_message, parse_system_info
from paths import ROOT
from system_fakes import (
    EPYC,
    EPYC_AVX2_FLAGS,
    INFO_EPYC_NATIVE,
    INFO_XEON_NATIVE,
    INFO_XEON_NO_AMX,
    WINDOWS,
    XEON,
    cpuinfo_text,
)


def test_cpuinfo_gives_the_model_and_the_first_processors_flags() -> None:
    model, flags = parse_cpuinfo(cpuinfo_text("AMD EPYC 7B13", EPYC_AVX2_FLAGS))
    assert model == "AMD EPYC 7B13"
    assert {"avx2", "fma", "pni"} <= flags and "avx512f" not in flags
    assert XEON.has_amx is True and EPYC.has_amx is False and WINDOWS.has_amx is None
    assert XEON.notable()[-3:] == ["amx_tile", "amx_int8", "amx_bf16"]
    assert "flags unknown" in WINDOWS.summary()


def test_this_machines_cpu_is_read() -> None:
    here = read_cpu()
    assert here.model and here.cores >= 1
    if sys.platform.startswith("linux"):
        assert here.flags is not None and "sse2" in here.flags


def test_system_info_pairs_are_parsed() -> None:
    info = parse_system_info(INFO_XEON_NATIVE)
    assert info["AMX_INT8"] == "1" and info["AVX512"] == "1" and info["REPACK"] == "1"
    assert "AMX_INT8" not in parse_system_info(INFO_XEON_NO_AMX)


def test_amx_kernels_on_an_amx_cpu_turn_the_guard_on() -> None:
    verdict = assess(INFO_XEON_NATIVE, XEON)
    assert verdict.amx_compiled and verdict.amx_guard and not verdict.fits
    assert not verdict.unsupported and not verdict.unused
    assert "ggml-org/llama.cpp#20824" in verdict.problems()[0]
    assert "use_extra_bufts=False" in guard_message(verdict)


def test_the_projects_own_build_fits_the_xeon_and_needs_no_guard() -> None:
    verdict = assess(INFO_XEON_NO_AMX, XEON)
    assert verdict.fits and not verdict.amx_guard and verdict.problems() == []


def test_a_native_build_fits_the_epyc() -> None:
    verdict = assess(INFO_EPYC_NATIVE, EPYC)
    assert verdict.fits and not verdict.amx_guard


def test_a_xeon_build_on_the_epyc_is_foreign() -> None:
    verdict = assess(INFO_XEON_NO_AMX, EPYC)
    assert {"AVX512", "AVX512_VNNI", "AVX_VNNI"} <= set(verdict.unsupported)
    assert not verdict.fits and "illegal instruction" in " ".join(verdict.problems())


def test_an_epyc_build_on_the_xeon_runs_without_its_newer_kernels() -> None:
    verdict = assess(INFO_EPYC_NATIVE, XEON)
    assert not verdict.unsupported and not verdict.amx_guard
    assert {"AVX512", "AVX512_VNNI"} <= set(verdict.unused) and "AMX_INT8" not in verdict.unused
    assert not verdict.fits


def test_unknown_flags_guard_a_build_with_amx_and_nothing_else() -> None:
    assert assess(INFO_XEON_NATIVE, WINDOWS).amx_guard
    assert not assess(INFO_XEON_NO_AMX, WINDOWS).amx_guard
    assert assess(INFO_XEON_NO_AMX, WINDOWS).unused == []


def _build_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_llama", ROOT / "scripts/build_llama.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_build_adds_no_amx_flags_to_the_users_cmake_args(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    build = _build_script()
    monkeypatch.setattr(build.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(build.sys, "platform", "linux")
    args = build.cmake_args("-DLLAMA_CURL=OFF '-DCMAKE_C_FLAGS=-O2 -g'")
    assert args[0] == "-DLLAMA_CURL=OFF"
    assert "-DCMAKE_C_FLAGS=-O2 -g -mno-amx-tile -mno-amx-int8 -mno-amx-bf16" in args
    assert "-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" in args
    monkeypatch.setattr(build.platform, "machine", lambda: "arm64")
    assert build.cmake_args("-DLLAMA_CURL=OFF") == ["-DLLAMA_CURL=OFF"]


def test_each_cpu_and_each_set_of_flags_has_its_own_cached_wheel(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    build = _build_script()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    xeon = build.cache_dir("0.3.36", ["-DX=1"], XEON)
    assert xeon.is_relative_to(tmp_path / "ocak" / "llama-cpp-python")
    assert xeon == build.cache_dir("0.3.36", ["-DX=1"], XEON)
    assert xeon != build.cache_dir("0.3.36", ["-DX=1"], EPYC)
    assert xeon != build.cache_dir("0.3.36", ["-DX=2"], XEON)
    assert xeon != build.cache_dir("0.3.37", ["-DX=1"], XEON)


def test_no_compiler_stops_the_build_with_one_line_saying_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build = _build_script()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(SystemExit) as stop:
        build.build_wheel("0.3.36", [], tmp_path / "wheel")
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs a C and a C++ compiler" in err[0]
    assert "build-essential" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "wheel").exists()
