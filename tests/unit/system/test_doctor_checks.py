"""``ocak doctor``'s checks on faked machines (CPU, llama.cpp build, CUDA, memory): each known-bad
combination found, with its fix, and the exit status it implies.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ocak.config import Settings
from ocak.models.gguf_header import read_metadata
from ocak.models.hardware import CudaStatus
from ocak.system.doctor import Probes, Report, run_checks
from ocak.system.llama_build import Probe
from system_fakes import EPYC, INFO_EPYC_NATIVE, INFO_XEON_NATIVE, INFO_XEON_NO_AMX, XEON

GIB = 2**30


def probes(
    *,
    cpu: object = XEON,
    info: str = INFO_XEON_NO_AMX,
    llama_ok: bool = True,
    cuda: CudaStatus | None = None,
    mem: tuple[int, int] = (16 * GIB, 12 * GIB),
) -> Probes:
    return Probes(
        cpu=lambda: cpu,  # type: ignore[arg-type,return-value]
        llama=lambda: (
            Probe(True, "0.3.36", info, "/x/lib")
            if llama_ok
            else Probe(False, error="loading llama-cpp-python failed: it was killed by signal 4")
        ),
        cuda=lambda: cuda or CudaStatus(),
        memory=lambda: mem,
        ct2_compute_types=lambda device: "int8, float32",
    )


def settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(data_dir=tmp_path / "data", **values)  # type: ignore[arg-type]


def errors(report: Report) -> list[str]:
    return [f.what for f in report.findings if f.level == "error"]


def warnings(report: Report) -> list[str]:
    return [f.what for f in report.findings if f.level == "warning"]


def test_a_healthy_machine_has_no_findings_and_names_its_parts(tmp_path: Path) -> None:
    report = run_checks(settings(tmp_path), probes())
    assert report.findings == [] and not report.failed
    assert report.sections["cpu"]["model"] == XEON.model
    assert "amx_int8" in report.sections["cpu"]["flags"]
    assert report.sections["llama.cpp"]["AMX kernels"] == "not compiled in"
    assert report.sections["storage"]["data folder"] == str(tmp_path / "data")
    assert "KV cache" in report.sections["serve would load"]["default"]


def test_amx_kernels_on_an_amx_cpu_warn_with_the_fix_and_do_not_fail(tmp_path: Path) -> None:
    report = run_checks(settings(tmp_path), probes(info=INFO_XEON_NATIVE))
    assert not report.failed
    (finding,) = report.findings
    assert "ggml-org/llama.cpp#20824" in finding.what
    assert "-mno-amx-int8" in finding.fix and "make install" in finding.fix
    assert report.sections["llama.cpp"]["guard"].startswith("on")


def test_a_build_for_another_cpu_fails(tmp_path: Path) -> None:
    report = run_checks(settings(tmp_path), probes(cpu=EPYC, info=INFO_XEON_NO_AMX))
    assert report.failed
    assert any("AVX512" in e and "illegal instruction" in e for e in errors(report))


def test_a_build_for_an_older_cpu_only_warns(tmp_path: Path) -> None:
    report = run_checks(settings(tmp_path), probes(info=INFO_EPYC_NATIVE))
    assert not report.failed and any("slower" in w for w in warnings(report))


def test_a_library_that_dies_on_load_fails(tmp_path: Path) -> None:
    report = run_checks(settings(tmp_path), probes(llama_ok=False))
    assert report.failed and "signal 4" in errors(report)[0]


CUDA13 = CudaStatus(1, False, "libcublas.so.12 is missing", frozenset({"float16"}))


def test_cuda_without_cublas_12_fails_only_when_a_ctranslate2_model_is_served(
    tmp_path: Path,
) -> None:
    report = run_checks(settings(tmp_path), probes(cuda=CUDA13))
    assert not report.failed and any("libcublas.so.12" in w for w in warnings(report))
    ct2 = tmp_path / "ct2-model"
    ct2.mkdir()
    (ct2 / "model.bin").write_bytes(b"\0" * 16)
    report = run_checks(settings(tmp_path, model=[str(ct2)]), probes(cuda=CUDA13))
    assert report.failed and any("libcublas.so.12" in e for e in errors(report))
    fix = next(f.fix for f in report.findings if f.level == "error")
    assert "nvidia-cublas-cu12" in fix and "OCAK_DEVICE=cpu" in fix
    on_cpu = run_checks(settings(tmp_path, model=[str(ct2)], device="cpu"), probes(cuda=CUDA13))
    assert not on_cpu.failed


def test_too_little_memory_for_the_kv_cache_asked_for_fails_with_the_figures(
    tmp_path: Path,
) -> None:
    # 64 x 32768 tokens of SmolLM2-135M's cache is 22.5 GiB
    big = settings(tmp_path, parallel=64, ctx_size=32768)
    report = run_checks(big, probes(mem=(8 * GIB, 6 * GIB)))
    assert report.failed
    (problem,) = errors(report)
    assert "--parallel 64 x --ctx-size 32768" in problem and "6.00 GiB" in problem
    assert run_checks(settings(tmp_path), probes(mem=(8 * GIB, 6 * GIB))).findings == []


def test_a_model_serve_cannot_find_fails(tmp_path: Path) -> None:
    report = run_checks(settings(tmp_path, model=["no-such-model"]), probes())
    assert report.failed and "no-such-model" in errors(report)[0]


def test_an_unwritable_data_folder_fails(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    report = run_checks(Settings(data_dir=blocker / "data"), probes())
    assert report.failed and any("cannot write its data folder" in e for e in errors(report))


def test_the_header_reader_rejects_what_is_not_gguf(tmp_path: Path) -> None:
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00\x00")
    with pytest.raises(Exception, match="ends inside its GGUF header"):
        read_metadata(bad)
