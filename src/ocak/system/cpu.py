"""What the CPU is and which instruction sets it offers, read portably.

Linux lists the flags in ``/proc/cpuinfo`` (the names used throughout ocak);
macOS in ``sysctl machdep.cpu.*``, mapped to the Linux names; elsewhere
(Windows) the model name is known and the flags are not (``flags`` is None).
Standard library only: the install step reads it before ocak is installed.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# macOS sysctl feature names -> the /proc/cpuinfo names ocak uses.
_MACOS_NAMES = {
    "sse3": "pni",
    "avx1.0": "avx",
    "avx2": "avx2",
    "fma": "fma",
    "f16c": "f16c",
    "bmi2": "bmi2",
    "avx512f": "avx512f",
    "avx512vnni": "avx512_vnni",
    "avx512vbmi": "avx512vbmi",
    "avx512bf16": "avx512_bf16",
    "ssse3": "ssse3",
}
# The instruction sets worth naming in a log line or a bug report.
NOTABLE = (
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx_vnni",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)


@dataclass(frozen=True, slots=True)
class CpuInfo:
    """The CPU model, machine architecture, logical cores and (where readable) its flags."""

    model: str
    machine: str
    cores: int
    flags: frozenset[str] | None

    @property
    def has_amx(self) -> bool | None:
        """Whether the CPU has AMX (Intel Sapphire Rapids and later); None when unknown."""
        if self.flags is None:
            return None
        return "amx_int8" in self.flags or "amx_tile" in self.flags

    def notable(self) -> list[str]:
        """The notable flags present, in a fixed order (``avx2 avx512f amx_int8 ...``)."""
        return [f for f in NOTABLE if self.flags and f in self.flags]

    def summary(self) -> str:
        """One line for a log or a bug report: model, cores, notable flags."""
        flags = " ".join(self.notable()) if self.flags is not None else "flags unknown"
        return f"{self.model} ({self.machine}, {self.cores} cores): {flags or 'no AVX'}"


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """The model name and the flags of the first processor in a ``/proc/cpuinfo`` text."""
    model, flags = "", frozenset[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
        if model and flags:
            break
    return model, flags


def _sysctl(name: str) -> str:
    try:
        out = subprocess.run(
            ["sysctl", "-n", name], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def read_cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    """This machine's CPU."""
    machine = platform.machine() or "unknown"
    cores = os.cpu_count() or 1
    if cpuinfo.is_file():
        try:
            model, flags = parse_cpuinfo(cpuinfo.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            model, flags = "", frozenset()
        return CpuInfo(model or platform.processor() or machine, machine, cores, flags)
    if sys.platform == "darwin":
        words = f"{_sysctl('machdep.cpu.features')} {_sysctl('machdep.cpu.leaf7_features')}"
        mac_flags = frozenset(_MACOS_NAMES.get(w.lower(), w.lower()) for w in words.split())
        model = _sysctl("machdep.cpu.brand_string") or platform.processor() or machine
        return CpuInfo(model, machine, cores, mac_flags if mac_flags else None)
    return CpuInfo(platform.processor() or machine, machine, cores, None)
