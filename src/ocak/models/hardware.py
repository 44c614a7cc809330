"""What the machine offers a model: CUDA GPUs CTranslate2 can really use, and free memory.

CTranslate2's wheels link CUDA 12's cuBLAS and load it lazily: on a machine with
only CUDA 13 libraries, ``get_cuda_device_count()`` still lists the GPU (and
float16 support), and the first generation then fails for want of
``libcublas.so.12``. ``detect_cuda`` checks that library up front so ocak can say
plainly what is missing and how to fix it, instead of failing mid-request.

The probes (device count, library loading) are injectable, so the decision
logic is tested without a GPU.
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ocak.errors import OcakError

# The cuBLAS major version the CTranslate2 4.x wheels are built against.
CUBLAS_SONAME = "libcublas.so.12"
CUBLAS_FIX = (
    "install CUDA 12's cuBLAS beside the driver: `pip install nvidia-cublas-cu12` "
    "(ocak finds it in the Python environment), or the CUDA 12 toolkit's libcublas with its "
    "folder on LD_LIBRARY_PATH"
)

Device = Literal["auto", "cpu", "cuda"]


class DeviceError(OcakError):
    """A GPU that is there but cannot be used, and the user did not ask for the CPU."""


@dataclass(frozen=True, slots=True)
class CudaStatus:
    """What CTranslate2 can do with CUDA on this machine."""

    devices: int = 0
    usable: bool = False
    problem: str | None = None
    compute_types: frozenset[str] = field(default_factory=frozenset)

    @property
    def present(self) -> bool:
        return self.devices > 0


def _ct2_device_count() -> int:
    import ctranslate2

    return int(ctranslate2.get_cuda_device_count())


def _ct2_compute_types(device: str) -> frozenset[str]:
    import ctranslate2

    return frozenset(ctranslate2.get_supported_compute_types(device))


def _pip_cublas_candidates() -> list[str]:
    """libcublas.so.12 shipped by the ``nvidia-cublas-cu12`` wheel, if installed."""
    spec = importlib.util.find_spec("nvidia")
    roots = list(spec.submodule_search_locations or []) if spec else []
    roots.append(str(Path(sys.prefix) / "lib"))
    found: list[str] = []
    for root in roots:
        found.extend(sorted(glob.glob(os.path.join(root, "**", CUBLAS_SONAME), recursive=True)))
    return found


def load_cublas() -> str | None:
    """Load cuBLAS 12 into the process (so CTranslate2's lazy load finds it); None if absent.

    Tries the system's library search path first, then the pip wheel's copy,
    loaded with RTLD_GLOBAL so the later ``dlopen`` by soname succeeds.
    """
    for candidate in [CUBLAS_SONAME, *_pip_cublas_candidates()]:
        try:
            ctypes.CDLL(candidate, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        return candidate
    return None


def other_cublas() -> list[str]:
    """Other cuBLAS majors that load here (e.g. CUDA 13's), to name them in the message."""
    found = []
    for major in (13, 14, 11):
        name = f"libcublas.so.{major}"
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        found.append(name)
    return found


def detect_cuda(
    *,
    device_count: Callable[[], int] = _ct2_device_count,
    compute_types: Callable[[str], frozenset[str]] = _ct2_compute_types,
    cublas: Callable[[], str | None] = load_cublas,
    others: Callable[[], list[str]] = other_cublas,
) -> CudaStatus:
    """CUDA as CTranslate2 sees it, with the libcublas check the wheel itself skips."""
    try:
        count = device_count()
    except Exception:  # no CUDA runtime at all: a CPU machine
        count = 0
    if count <= 0:
        return CudaStatus()
    try:
        types = compute_types("cuda")
    except Exception:
        types = frozenset()
    if cublas() is None:
        seen = others()
        has = f"; this machine has {', '.join(seen)} (another CUDA version)" if seen else ""
        problem = (
            f"CTranslate2 sees {count} CUDA GPU(s) but cannot run on them: {CUBLAS_SONAME} "
            f"(CUDA 12's cuBLAS, which the CTranslate2 wheel is built against) is missing{has}. "
            f"To use the GPU, {CUBLAS_FIX}. To run on the CPU instead, ask for it with "
            "--device cpu (or OCAK_DEVICE=cpu)."
        )
        return CudaStatus(count, False, problem, types)
    return CudaStatus(count, True, None, types)


def pick_device(requested: str, status: CudaStatus) -> str:
    """``cuda`` or ``cpu`` for a requested device; raises when a GPU is there but broken.

    ``auto`` uses a working GPU, the CPU on a machine without one, and refuses a
    GPU it cannot use: falling back to the CPU silently would hide a 10x slowdown.
    """
    if requested == "cpu":
        return "cpu"
    if requested not in ("auto", "cuda"):
        raise DeviceError(f"unknown device '{requested}': use auto, cpu or cuda")
    if status.usable:
        return "cuda"
    if status.present:
        raise DeviceError(status.problem or "the CUDA GPU cannot be used")
    if requested == "cuda":
        raise DeviceError(
            "no CUDA GPU is visible to CTranslate2 (get_cuda_device_count() is 0); "
            "use --device cpu or auto"
        )
    return "cpu"


def _windows_memory() -> tuple[int, int]:  # pragma: no cover - Windows only
    class MemoryStatus(ctypes.Structure):
        _fields_ = [
            ("length", ctypes.c_ulong),
            ("load", ctypes.c_ulong),
            ("total_phys", ctypes.c_ulonglong),
            ("avail_phys", ctypes.c_ulonglong),
            ("total_page", ctypes.c_ulonglong),
            ("avail_page", ctypes.c_ulonglong),
            ("total_virtual", ctypes.c_ulonglong),
            ("avail_virtual", ctypes.c_ulonglong),
            ("avail_extended", ctypes.c_ulonglong),
        ]

    status = MemoryStatus()
    status.length = ctypes.sizeof(MemoryStatus)
    if not ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):  # type: ignore[attr-defined]
        return 0, 0
    return int(status.total_phys), int(status.avail_phys)


def _meminfo(meminfo: Path) -> dict[str, int]:
    values: dict[str, int] = {}
    with meminfo.open(encoding="ascii") as f:
        for line in f:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                values[key] = int(parts[0]) * 1024
    return values


def memory(meminfo: Path = Path("/proc/meminfo")) -> tuple[int, int]:
    """(total, available to a new process) bytes of RAM; 0 for what cannot be read."""
    if sys.platform == "win32":  # pragma: no cover - Windows only
        return _windows_memory()
    try:
        values = _meminfo(meminfo)
        total = values.get("MemTotal", 0)
        return total, values.get("MemAvailable", total)
    except OSError:
        pass
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        total = int(os.sysconf("SC_PHYS_PAGES") * page)
    except (ValueError, OSError, AttributeError):
        return 0, 0
    try:
        avail = int(os.sysconf("SC_AVPHYS_PAGES") * page)
    except (ValueError, OSError, AttributeError):
        avail = total
    return total, avail


def available_memory() -> int:
    """Bytes of memory available to a new process (MemAvailable), or total RAM as a fallback."""
    return memory()[1]
