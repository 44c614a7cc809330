"""The committed gRPC code is what ``make proto`` makes from ``proto/`` today."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

import pytest

from paths import ROOT


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("proto_generate", ROOT / "proto" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_code_matches_the_proto() -> None:
    stale = load_generator().stale()
    assert stale == [], f"run `make proto` and commit: {stale}"


def test_stale_code_is_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gen = load_generator()
    copy = tmp_path / "grpc"
    shutil.copytree(gen.PACKAGE_ROOT, copy)
    monkeypatch.setattr(gen, "PACKAGE_ROOT", copy)
    assert gen.stale() == []
    edited = copy / "v1" / "ocak_pb2_grpc.py"
    edited.write_text(edited.read_text() + "# edited by hand\n")
    (copy / "v1" / "ocak_pb2.pyi").unlink()
    assert sorted(gen.stale()) == sorted([str(edited), str(copy / "v1" / "ocak_pb2.pyi")])


def test_generated_modules_import_each_other_inside_the_package() -> None:
    from ocak.grpc.v1 import ocak_pb2, ocak_pb2_grpc

    # The proto keeps its own path in the descriptor pool (what reflection shows).
    assert ocak_pb2.DESCRIPTOR.name == "ocak/v1/ocak.proto"
    assert vars(ocak_pb2_grpc)["ocak_dot_v1_dot_ocak__pb2"] is ocak_pb2
    text = (ROOT / "src/ocak/grpc/v1/ocak_pb2_grpc.py").read_text()
    assert "from . import ocak_pb2" in text
    assert "from ocak.v1" not in text
