"""``ocak doctor`` as a user runs it on this machine, and the GGUF header reader against
llama.cpp's own reading of the default model.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ocak.engines.llamacpp.model import LlamaModel
from ocak.models.gguf_header import kv_shape, read_metadata
from ocak.models.store import default_model_path
from ocak.system.cpu import read_cpu


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
