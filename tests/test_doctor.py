"""``ocak doctor``: the facts a bug report needs and each known-bad combination with its fix.

The checks run on faked machines (CPU, llama.cpp build, CUDA, memory) for the
decisions, and once for real, as a user runs it, on this machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ocak.config import Settings
from ocak.engines.llamacpp.model import LlamaModel
from ocak.models.gguf_header import kv_shape, read_metadata
from ocak.models.hardware import CudaStatus
from ocak.models.store import default_model_path
from ocak.system.cpu import read_cpu
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


def test_the_header_reader_agrees_with_llama_cpp_on_the_default_model() -> None:
    path = default_model_path()
    meta = read_metadata(path)
    model = LlamaModel(path)
    try:
        for key, value in meta.items():
            if isinstance(value, (int, str)) and not isinstance(value, bool):
                assert str(value) == model.meta(key), key
        assert kv_shape(meta.get) == kv_shape(model.meta)
    finally:
        model.close()
    shape = kv_shape(meta.get)
    assert shape is not None and shape.layers == 30
    # SmolLM2-135M: 3 KV heads of 64, keys and values, f16: 30 * 384 * 2 bytes a token
    assert shape.bytes_for(1) == 30 * 384 * 2


def test_the_header_reader_rejects_what_is_not_gguf(tmp_path: Path) -> None:
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00\x00")
    with pytest.raises(Exception, match="ends inside its GGUF header"):
        read_metadata(bad)


def test_ocak_doctor_on_this_machine(tmp_path: Path) -> None:
    """As a user runs it: a report, exit 0 here, JSON that names this CPU."""
    env = {"OCAK_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"}
    text = subprocess.run(
        [sys.executable, "-m", "ocak", "doctor"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert text.returncode == 0, text.stdout + text.stderr
    assert "llama.cpp" in text.stdout and "no known problem found" in text.stdout
    out = subprocess.run(
        [sys.executable, "-m", "ocak", "doctor", "--json", "--model", "nothing-here"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 1
    data = json.loads(out.stdout)
    assert data["failed"] is True
    assert data["sections"]["cpu"]["model"] == read_cpu().model
    assert data["sections"]["llama.cpp"]["system info"].startswith("CPU :")
    assert any("nothing-here" in f["what"] for f in data["findings"])
