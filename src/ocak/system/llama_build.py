"""What the loaded llama.cpp was compiled with, and whether that suits this CPU.

llama.cpp's CMake defaults to ``-march=native``: the library holds exactly the
instruction sets of the machine that built it. Three ways that goes wrong, all
seen on the machines this project runs on:

- **AMX compiled in, on an AMX CPU**: the AMX matrix kernels segfault at the
  first request (``ggml_backend_amx_mul_mat``; upstream ggml-org/llama.cpp#20824,
  unfixed). The AMX path is reached only through llama.cpp's *extra* buffer
  types, so ``use_extra_bufts = False`` avoids it (and also turns off weight
  repacking, which speeds Q4_0/Q4_K/IQ4_NL models).
- **Built on another CPU** with instructions this one lacks (AVX-512 on an
  AVX2-only machine): illegal instruction at load or first use.
- **Built on an older CPU**: it runs, without the newer kernels (slower).

``assess`` decides from llama.cpp's system-info line and the CPU flags, both
given as plain values so the decision is tested without choosing a machine.
Standard library only (the install step runs it before ocak is installed).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ocak.system.cpu import CpuInfo

# llama.cpp's system-info feature names (x86) -> the /proc/cpuinfo flag each needs.
FEATURE_FLAGS = {
    "SSE3": "pni",
    "SSSE3": "ssse3",
    "AVX": "avx",
    "AVX_VNNI": "avx_vnni",
    "AVX2": "avx2",
    "F16C": "f16c",
    "FMA": "fma",
    "BMI2": "bmi2",
    "AVX512": "avx512f",
    "AVX512_VBMI": "avx512vbmi",
    "AVX512_VNNI": "avx512_vnni",
    "AVX512_BF16": "avx512_bf16",
    "AMX_INT8": "amx_int8",
}
AMX_FEATURE = "AMX_INT8"
UPSTREAM_BUG = "ggml-org/llama.cpp#20824"
# What the project's own build adds to llama.cpp's flags (see scripts/build_llama.py).
NO_AMX_FLAGS = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
_PAIR = re.compile(r"([A-Za-z0-9_]+)\s*=\s*([^|]+?)\s*(?:\||$)")


def parse_system_info(text: str) -> dict[str, str]:
    """``{"AVX2": "1", "AMX_INT8": "1", ...}`` from ``llama_print_system_info()``'s line."""
    return {key: value.strip() for key, value in _PAIR.findall(text)}


@dataclass(frozen=True, slots=True)
class Assessment:
    """How a llama.cpp build fits a CPU."""

    amx_compiled: bool
    cpu_has_amx: bool | None  # None: the CPU's flags could not be read
    unsupported: list[str] = field(default_factory=list)  # compiled in, missing on the CPU
    unused: list[str] = field(default_factory=list)  # on the CPU, missing from the build

    @property
    def amx_guard(self) -> bool:
        """Run with ``use_extra_bufts = False``: AMX kernels are in and may be reached.

        An unknown CPU counts as an AMX one: a build with AMX was made on such a
        machine, and the guard only costs repacking where it was not needed.
        """
        return self.amx_compiled and self.cpu_has_amx is not False

    @property
    def fits(self) -> bool:
        """The build the install step wants: no AMX, nothing foreign, nothing missing."""
        return not self.amx_compiled and not self.unsupported and not self.unused

    def problems(self) -> list[str]:
        """Sentences saying what is wrong with the build on this CPU (empty: nothing)."""
        out = []
        if self.amx_compiled:
            out.append(
                "llama.cpp was compiled with its AMX kernels, which crash at the first request "
                f"on AMX CPUs ({UPSTREAM_BUG})"
            )
        if self.unsupported:
            out.append(
                "llama.cpp was compiled for another CPU: it uses "
                f"{', '.join(self.unsupported)}, which this CPU lacks (illegal instruction)"
            )
        if self.unused:
            out.append(
                "llama.cpp was compiled for an older CPU: it does not use "
                f"{', '.join(self.unused)}, which this CPU has (slower)"
            )
        return out


def assess(system_info: str, cpu: CpuInfo) -> Assessment:
    """Compare what llama.cpp was compiled with to what the CPU offers."""
    features = {k for k, v in parse_system_info(system_info).items() if v == "1"}
    amx = AMX_FEATURE in features
    if cpu.flags is None:  # flags unknown (Windows): only the AMX guard can be decided
        return Assessment(amx, None)
    unsupported = [
        f for f, flag in FEATURE_FLAGS.items() if f in features and flag not in cpu.flags
    ]
    unused = [
        f
        for f, flag in FEATURE_FLAGS.items()
        if f != AMX_FEATURE and f not in features and flag in cpu.flags
    ]
    return Assessment(amx, cpu.has_amx, unsupported, unused)


def guard_message(assessment: Assessment) -> str:
    """The one log line the run-time guard writes when it turns the AMX path off."""
    where = "this CPU has AMX" if assessment.cpu_has_amx else "this CPU's flags are unknown"
    return (
        f"llama.cpp was built with its AMX kernels and {where}: they crash at the first "
        f"request ({UPSTREAM_BUG}), so ocak loads models with use_extra_bufts=False "
        "(no weight repacking). Reinstall llama-cpp-python without them: `make install` "
        f"in ocak's checkout, or CMAKE_ARGS with {NO_AMX_FLAGS} in CMAKE_C_FLAGS and "
        "CMAKE_CXX_FLAGS"
    )


@dataclass(frozen=True, slots=True)
class Probe:
    """What a separate process found when it loaded llama.cpp."""

    ok: bool
    version: str = ""
    system_info: str = ""
    lib_dir: str = ""
    error: str = ""


def probe(python: str = sys.executable, timeout: float = 120.0) -> Probe:
    """Load llama-cpp-python in a child process and read its build.

    A child, because a library built for another CPU dies with SIGILL on load:
    the caller must live to say so.
    """
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2])  # importable before ocak is installed
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    try:
        proc = subprocess.run(
            [python, "-m", "ocak.system.llama_build"],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Probe(False, error=f"could not run {python}: {exc}")
    if proc.returncode != 0:
        if proc.returncode < 0:
            why = f"it was killed by signal {-proc.returncode}"
            if -proc.returncode == 4:
                why += " (SIGILL: compiled for another CPU)"
        else:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            why = lines[-1] if lines else f"exit code {proc.returncode}"
        return Probe(False, error=f"loading llama-cpp-python failed: {why}")
    try:
        data = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return Probe(False, error=f"unexpected probe output: {proc.stdout[-200:]!r}")
    return Probe(True, data["version"], data["system_info"], data["lib_dir"])


def loaded_system_info() -> str:
    """llama.cpp's system-info line from the llama-cpp-python loaded in this process."""
    import llama_cpp

    info: bytes = llama_cpp.llama_print_system_info()
    return info.decode("utf-8", "replace")


def _main() -> None:  # pragma: no cover - run by probe() in a child process
    import llama_cpp

    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    print(
        json.dumps(
            {
                "version": getattr(llama_cpp, "__version__", "?"),
                "system_info": loaded_system_info(),
                "lib_dir": str(lib_dir),
            }
        )
    )


if __name__ == "__main__":  # pragma: no cover
    _main()
