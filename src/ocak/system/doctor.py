"""``ocak doctor``'s checks: what this machine, its engines and ``serve``'s settings amount to.

A report has facts (grouped in sections, for a bug report) and findings: each a
known-bad combination with the fix, an ``error`` when something would fail and
a ``warning`` when it would run worse than it could. Every probe is an argument
with a real default, so the logic is tested with faked machines.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any, Literal

from ocak import __version__
from ocak.config import Settings
from ocak.errors import OcakError
from ocak.models.hardware import CudaStatus, detect_cuda, memory
from ocak.models.memory import estimate
from ocak.models.store import ModelSpec, resolve
from ocak.system.cpu import CpuInfo, read_cpu
from ocak.system.llama_build import NO_AMX_FLAGS, Probe, assess, probe

Level = Literal["error", "warning"]
REBUILD = (
    "reinstall llama-cpp-python built for this CPU: `make install` in ocak's checkout "
    f"(it adds {NO_AMX_FLAGS}), or `CMAKE_ARGS=\"-DCMAKE_C_FLAGS='{NO_AMX_FLAGS}' "
    f"-DCMAKE_CXX_FLAGS='{NO_AMX_FLAGS}'\" pip install --force-reinstall --no-cache-dir "
    "--no-deps llama-cpp-python`"
)
# Resident memory of a server process before any model (Python, FastAPI, engines' libraries).
BASE_PROCESS = 300 * 2**20


@dataclass(frozen=True, slots=True)
class Finding:
    level: Level
    what: str
    fix: str


@dataclass(slots=True)
class Report:
    sections: dict[str, dict[str, str]] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(f.level == "error" for f in self.findings)

    def add(self, level: Level, what: str, fix: str) -> None:
        self.findings.append(Finding(level, what, fix))

    def as_dict(self) -> dict[str, Any]:
        """What ``ocak doctor --json`` prints and ``GET /v1/doctor`` answers."""
        return {
            "sections": self.sections,
            "findings": [asdict(f) for f in self.findings],
            "failed": self.failed,
        }


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _ct2_compute_types(device: str) -> str:
    try:
        import ctranslate2

        return ", ".join(sorted(ctranslate2.get_supported_compute_types(device)))
    except Exception as exc:  # no such device, or CTranslate2 missing
        return f"none ({type(exc).__name__})"


@dataclass(slots=True)
class Probes:
    """How the machine is read; tests replace any of these."""

    cpu: Callable[[], CpuInfo] = read_cpu
    llama: Callable[[], Probe] = probe
    cuda: Callable[[], CudaStatus] = detect_cuda
    memory: Callable[[], tuple[int, int]] = memory
    ct2_compute_types: Callable[[str], str] = _ct2_compute_types


def check_llama(report: Report, cpu: CpuInfo, found: Probe) -> None:
    section = report.sections.setdefault("llama.cpp", {})
    section["llama-cpp-python"] = _version("llama-cpp-python")
    if not found.ok:
        section["status"] = "does not load"
        report.add("error", f"llama.cpp cannot be used: {found.error}", REBUILD)
        return
    section["system info"] = found.system_info.strip()
    section["library"] = found.lib_dir
    verdict = assess(found.system_info, cpu)
    section["AMX kernels"] = "compiled in" if verdict.amx_compiled else "not compiled in"
    section["guard"] = (
        "on: models load with use_extra_bufts=False (no weight repacking)"
        if verdict.amx_guard
        else "off (not needed)"
    )
    if verdict.amx_guard:
        report.add(
            "warning",
            "llama.cpp has its AMX kernels, which crash at the first request on AMX CPUs "
            "(ggml-org/llama.cpp#20824); ocak turns them off at load, and weight repacking "
            "with them (slower Q4_0/Q4_K models)",
            REBUILD,
        )
    if verdict.unsupported:
        report.add(
            "error",
            f"llama.cpp was compiled for another CPU: it uses {', '.join(verdict.unsupported)}, "
            "which this CPU lacks (it will die of an illegal instruction)",
            REBUILD,
        )
    if verdict.unused:
        report.add(
            "warning",
            f"llama.cpp does not use {', '.join(verdict.unused)}, which this CPU has "
            "(a build for an older CPU, or a portable wheel): slower than it could be",
            REBUILD,
        )


def check_ct2(report: Report, probes: Probes, serves_ct2: bool, device: str) -> None:
    section = report.sections.setdefault("CTranslate2", {})
    section["ctranslate2"] = _version("ctranslate2")
    section["CPU compute types"] = probes.ct2_compute_types("cpu")
    cuda = probes.cuda()
    section["CUDA GPUs"] = str(cuda.devices)
    if cuda.present:
        section["CUDA compute types"] = ", ".join(sorted(cuda.compute_types)) or "none"
        section["cuBLAS 12"] = "found" if cuda.usable else "missing"
    section["device asked for"] = device
    if cuda.present and not cuda.usable and device != "cpu":
        report.add(
            "error" if serves_ct2 else "warning",
            cuda.problem or "the CUDA GPU cannot be used",
            "install CUDA 12's cuBLAS (`pip install nvidia-cublas-cu12`), or serve on the CPU "
            "with OCAK_DEVICE=cpu",
        )


def check_storage(report: Report, settings: Settings) -> None:
    section = report.sections.setdefault("storage", {})
    section["data folder"] = str(settings.data_dir)
    section["model store"] = str(settings.model_dir)
    folder = settings.data_dir
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # the folder that `serve` would create it in
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
        section["writable"] = "yes" if folder == settings.data_dir else f"yes (in {folder})"
    except OSError as exc:
        section["writable"] = "no"
        report.add(
            "error",
            f"ocak cannot write its data folder {settings.data_dir}: {exc.strerror}",
            "make it writable, or choose another with OCAK_DATA_DIR (or data_dir in the YAML)",
        )


def check_serve(report: Report, settings: Settings, available: int) -> list[ModelSpec]:
    """What ``serve`` would load, and whether it fits in the memory there is."""
    section = report.sections.setdefault("serve would load", {})
    specs: list[ModelSpec] = []
    needed = BASE_PROCESS
    for raw in settings.model:
        try:
            spec = resolve(raw, settings.model_dir)
        except (OcakError, ValueError) as exc:
            message = exc.message if isinstance(exc, OcakError) else str(exc)
            section[raw] = f"not found: {message}"
            report.add(
                "error",
                f"serve cannot load model '{raw}': {message}",
                "run `ocak models list` to see what can be served, or pass a GGUF path",
            )
            continue
        specs.append(spec)
        need = estimate(spec, ctx_size=settings.ctx_size, parallel=settings.parallel)
        weights, cache = need.weights, need.cache
        line = f"{spec.engine}, {spec.path} ({gib(weights)})"
        if cache:
            line += f"; KV cache {gib(cache)} for {settings.parallel} x {settings.ctx_size} tokens"
        section[spec.id] = line
        needed += weights + cache
    section["memory needed"] = f"about {gib(needed)}"
    if available and needed > available:
        report.add(
            "error",
            f"serving these models needs about {gib(needed)} (weights, KV cache for "
            f"--parallel {settings.parallel} x --ctx-size {settings.ctx_size}, the process), "
            f"but only {gib(available)} is available",
            "lower --parallel or --ctx-size, serve fewer or smaller models, or close programs",
        )
    return specs


def run_checks(settings: Settings, probes: Probes | None = None) -> Report:
    """Every check, in the order a bug report reads best."""
    probes = probes or Probes()
    report = Report()
    cpu = probes.cpu()
    report.sections["system"] = {
        "ocak": __version__,
        "python": f"{platform.python_version()} ({sys.executable})",
        "platform": platform.platform(),
    }
    report.sections["cpu"] = {
        "model": cpu.model,
        "machine": cpu.machine,
        "cores": str(cpu.cores),
        "flags": " ".join(cpu.notable()) if cpu.flags is not None else "unknown on this OS",
        "AMX": {True: "yes", False: "no", None: "unknown"}[cpu.has_amx],
    }
    total, available = probes.memory()
    report.sections["memory"] = {"total": gib(total), "available": gib(available)}
    check_llama(report, cpu, probes.llama())
    check_storage(report, settings)
    specs = check_serve(report, settings, available)
    serves_ct2 = any(s.engine == "ctranslate2" for s in specs)
    check_ct2(report, probes, serves_ct2, settings.device)
    threads = settings.threads or os.cpu_count() or 1
    report.sections["serve would load"]["threads"] = str(threads)
    return report
