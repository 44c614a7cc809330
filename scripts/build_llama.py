"""Install llama-cpp-python built for this CPU, without llama.cpp's AMX kernels.

Run by ``make install`` (and so by ``make serve`` and ``make test``) with the
virtual environment's Python, before the rest of ocak is installed.

- The installed library is checked in a child process first (its system-info
  line against the CPU's flags): when it fits, nothing else happens (< 1 s).
- Otherwise a wheel built for this exact CPU, these CMake arguments and this
  version is taken from ``$XDG_CACHE_HOME/ocak/llama-cpp-python/<key>/``, or
  built there once (about 7 minutes on 2 cores). pip's own wheel cache is not
  used: it does not key on ``CMAKE_ARGS``, and would hand back a build with the
  AMX kernels, or one made for another CPU.
- On x86-64 the build adds ``-mno-amx-*`` to the C and C++ flags: GCC and
  Clang let explicit ``-mno-`` flags win over ``-march=native``, so the AMX
  kernels (which crash, ggml-org/llama.cpp#20824) are left out and every other
  native instruction set stays in.

Exit status 1, with one line saying what to install, when no compiler is found.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ocak.system.cpu import CpuInfo, read_cpu  # noqa: E402
from ocak.system.llama_build import NO_AMX_FLAGS, assess, probe  # noqa: E402

PACKAGE = "llama-cpp-python"


def say(message: str) -> None:
    print(f"llama.cpp: {message}", flush=True)


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def pinned_version() -> str:
    """The llama-cpp-python version pyproject.toml pins (``==``)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps: list[str] = project["dependencies"]
    for dep in deps:
        name, sep, version = dep.partition("==")
        if name.strip() == PACKAGE and sep:
            return version.strip()
    fail(f"pyproject.toml must pin {PACKAGE} with ==")
    raise AssertionError  # unreachable


def wants_no_amx() -> bool:
    """x86-64 with a GCC-style compiler: where the ``-mno-amx-*`` flags exist."""
    return platform.machine().lower() in ("x86_64", "amd64") and sys.platform != "win32"


def cmake_args(base: str) -> list[str]:
    """The user's (or the Makefile's) CMAKE_ARGS with the no-AMX flags added to C and C++."""
    args = shlex.split(base)
    if not wants_no_amx():
        return args
    for var in ("CMAKE_C_FLAGS", "CMAKE_CXX_FLAGS"):
        prefix = f"-D{var}="
        for i, arg in enumerate(args):
            if arg.startswith(prefix):
                args[i] = f"{arg} {NO_AMX_FLAGS}"
                break
        else:
            args.append(f"{prefix}{NO_AMX_FLAGS}")
    return args


def cache_dir(version: str, args: list[str], cpu: CpuInfo) -> Path:
    """One folder per (version, CMake arguments, CPU, Python, platform)."""
    ident = json.dumps(
        [
            version,
            args,
            cpu.model,
            sorted(cpu.flags or ()),
            sys.implementation.cache_tag,
            platform.platform(terse=True),
        ]
    )
    key = hashlib.sha256(ident.encode()).hexdigest()[:16]
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "ocak" / PACKAGE / f"{version}-{key}"


def installed_fits(version: str, cpu: CpuInfo, *, after_build: bool = False) -> bool:
    """Whether the installed llama-cpp-python is ``version`` and suits this CPU."""
    found = probe(sys.executable)
    if not found.ok:
        if after_build or "No module named" not in found.error:
            say(found.error)
        return False
    if found.version != version:
        say(f"installed {found.version}, {version} wanted")
        return False
    verdict = assess(found.system_info, cpu)
    if verdict.fits:
        return True
    for problem in verdict.problems():
        say(problem)
    if after_build and not verdict.amx_compiled and not verdict.unsupported:
        say("built with the compiler's native set; using it")  # an older compiler's -march
        return True
    return False


def find_compilers() -> list[str]:
    """The C and C++ compilers that are missing (empty: both found)."""
    missing = []
    for env, names in (("CC", ("cc", "gcc", "clang")), ("CXX", ("c++", "g++", "clang++"))):
        chosen = os.environ.get(env)
        if chosen and shutil.which(shlex.split(chosen)[0]):
            continue
        if not chosen and any(shutil.which(n) for n in names):
            continue
        missing.append("C" if env == "CC" else "C++")
    return missing


def install_wheel(wheel: Path) -> None:
    """Replace whatever llama-cpp-python is installed by ``wheel`` (and add its dependencies)."""
    pip = [sys.executable, "-m", "pip"]
    subprocess.run(  # nothing to say when none is installed (a new environment)
        [*pip, "uninstall", "--quiet", "--yes", PACKAGE],
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    subprocess.run([*pip, "install", "--quiet", str(wheel)], check=True)


def build_wheel(version: str, args: list[str], target: Path) -> Path:
    """Build the wheel into ``target`` (a fresh folder); its log lies beside it."""
    missing = find_compilers()
    if missing:
        fail(
            f"building llama.cpp needs a {' and a '.join(missing)} compiler and none was found: "
            "install one (Debian/Ubuntu: `sudo apt-get install build-essential cmake`; "
            "Fedora: `sudo dnf install gcc-c++ cmake`; macOS: `xcode-select --install`), "
            "then run this again"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    log_path = target.parent / f"{target.name}.log"
    env = {**os.environ, "CMAKE_ARGS": shlex.join(args)}
    say(
        f"building {PACKAGE} {version} for this CPU, once (about 7 minutes on 2 cores); "
        f"log: {log_path}"
    )
    say(f"CMAKE_ARGS={env['CMAKE_ARGS']}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp, log_path.open("w") as log:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--verbose", "--no-deps", "--no-cache-dir",
             "--no-binary", PACKAGE, f"{PACKAGE}=={version}", "--wheel-dir", tmp],
            stdout=log, stderr=subprocess.STDOUT, env=env, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            tail = log_path.read_text(errors="replace").splitlines()[-25:]
            print("\n".join(tail), file=sys.stderr)
            fail(f"building {PACKAGE} {version} failed (exit {proc.returncode}); see {log_path}")
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            fail(f"the build of {PACKAGE} left {len(wheels)} wheels in {tmp}")
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir()
        wheel = target / wheels[0].name
        shutil.move(str(wheels[0]), wheel)
    say(f"built in {time.monotonic() - started:.0f} s")
    return wheel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if a wheel is cached")
    opts = parser.parse_args()
    version = pinned_version()
    cpu = read_cpu()
    if not opts.force and installed_fits(version, cpu):
        return
    args = cmake_args(os.environ.get("CMAKE_ARGS", ""))
    target = cache_dir(version, args, cpu)
    cached = sorted(target.glob("*.whl")) if target.is_dir() else []
    if cached and not opts.force:
        say(f"installing the wheel built for this CPU: {cached[0]}")
        install_wheel(cached[0])
        if installed_fits(version, cpu, after_build=True):
            return
        say("the cached wheel does not fit this CPU; building again")
    wheel = build_wheel(version, args, target)
    install_wheel(wheel)
    if not installed_fits(version, cpu, after_build=True):
        fail(
            f"the {PACKAGE} just built does not suit this CPU ({cpu.summary()}); "
            f"see the lines above and {target.parent / (target.name + '.log')}"
        )
    say(f"installed {wheel.name} ({cpu.summary()})")


if __name__ == "__main__":
    main()
