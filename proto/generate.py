"""Generate ocak's gRPC Python code from ``proto/`` with grpcio-tools (``make proto``).

The generated modules are committed under ``src/ocak/grpc/<version>/`` so that
``pip install`` needs no code generator; ``tests/test_grpc_codegen.py`` fails
when they no longer match the proto. ``--check`` does the same from the shell.

protoc names a module after the proto's path (``ocak/v1/ocak.proto`` gives
``ocak.v1.ocak_pb2``); the modules live in ``ocak.grpc.v1``, so the one import
protoc writes between them is made relative. The proto keeps its own path in
the descriptor pool, which is what server reflection shows.

Needs the dev extras: grpcio-tools (protoc and its gRPC plugin) and mypy-protobuf
(typed ``.pyi`` stubs for the messages and the service).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PACKAGE_ROOT = ROOT / "src" / "ocak" / "grpc"
PROTOS = ["ocak/v1/ocak.proto"]
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def _plugin(name: str) -> str:
    """A protoc plugin installed beside this Python (the venv's bin)."""
    found = Path(sys.executable).parent / name
    if found.exists():
        return str(found)
    which = shutil.which(name)
    if which is None:
        raise SystemExit(f"{name} not found: install the dev extras (pip install -e '.[dev]')")
    return which


def _relative_imports(text: str, proto_package: str) -> str:
    """``from ocak.v1 import x_pb2`` -> ``from . import x_pb2`` (sibling generated modules)."""
    pattern = rf"^from {re.escape(proto_package)} import (\w+_pb2)\b"
    return re.sub(pattern, r"from . import \1", text, flags=re.MULTILINE)


def generate() -> dict[Path, str]:
    """Every generated file, as its path under ``src/ocak/grpc`` and its text."""
    from grpc_tools import protoc  # dev dependency; imported only when generating

    include = Path(protoc.__file__).parent / "_proto"  # google/protobuf/*.proto
    out: dict[Path, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
            f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
            f"--python_out={tmp}",
            f"--grpc_python_out={tmp}",
            f"--mypy_out={tmp}",
            f"--mypy_grpc_out={tmp}",
            *PROTOS,
        ]
        cwd = os.getcwd()
        os.chdir(PROTO_ROOT)  # protoc records file names relative to -I; keep them stable
        try:
            code = protoc.main(args)
        finally:
            os.chdir(cwd)
        if code != 0:
            raise SystemExit(f"protoc failed with exit code {code}")
        for proto in PROTOS:
            folder = Path(proto).parent  # ocak/v1
            version = folder.name  # v1
            stem = Path(proto).stem
            for suffix in SUFFIXES:
                text = (Path(tmp) / folder / f"{stem}{suffix}").read_text(encoding="utf-8")
                text = _relative_imports(text, ".".join(folder.parts))
                out[Path(version) / f"{stem}{suffix}"] = text
    return out


def stale() -> list[str]:
    """Generated files that are missing or differ from what the proto gives now."""
    return [
        str(PACKAGE_ROOT / rel)
        for rel, text in generate().items()
        if not (PACKAGE_ROOT / rel).exists()
        or (PACKAGE_ROOT / rel).read_text(encoding="utf-8") != text
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the code is stale")
    args = parser.parse_args()
    if args.check:
        bad = stale()
        for path in bad:
            print(f"stale: {path}", file=sys.stderr)
        if bad:
            print("run `make proto` and commit the result", file=sys.stderr)
        return 1 if bad else 0
    for rel, text in generate().items():
        path = PACKAGE_ROOT / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        init = path.parent / "__init__.py"
        if not init.exists():
            init.write_text('"""Generated from proto/ by `make proto`; do not edit."""\n')
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
