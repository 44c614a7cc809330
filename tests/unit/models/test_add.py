"""``ocak models add``: a GGUF from this machine into the store, a model or a LoRA adapter
by what its header says; anything else is refused with the reason."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from ocak.models.add import add_gguf
from ocak.models.manifest import file_sha256
from ocak.models.store import ModelFileError, ModelStore


def tiny_gguf(path: Path, kind: str, adapter_type: str = "lora") -> Path:
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_type(kind)
    if kind == "adapter":
        writer.add_string("adapter.type", adapter_type)
        writer.add_float32("adapter.lora.alpha", 8.0)
    writer.add_string("general.license", "apache-2.0")
    writer.add_tensor("blk.0.attn_q.weight.lora_a", np.zeros((2, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_an_adapter_is_stored_with_its_base(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    source = tiny_gguf(tmp_path / "pirate.gguf", "adapter")
    manifest = add_gguf(store, source, base="default")
    assert (manifest.name, manifest.kind, manifest.base) == ("pirate", "adapter", "default")
    assert manifest.license == "apache-2.0"
    stored = store.get("pirate")
    assert stored.path.read_bytes() == source.read_bytes()
    assert manifest.files[0].sha256 == file_sha256(source)
    assert store.partials() == []  # nothing left in staging


def test_a_model_is_stored_under_the_name_given(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    manifest = add_gguf(store, tiny_gguf(tmp_path / "m.gguf", "model"), name="owner/small:Q8_0")
    assert (manifest.kind, store.get("owner/small:Q8_0").manifest.engine) == ("chat", "llama.cpp")


def test_what_cannot_be_added_says_why(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    text = tmp_path / "notes.gguf"
    text.write_text("not a model")
    with pytest.raises(ModelFileError, match="not a GGUF file"):
        add_gguf(store, text)
    with pytest.raises(ModelFileError, match="no such file"):
        add_gguf(store, tmp_path / "missing.gguf")
    with pytest.raises(ModelFileError, match="takes no base"):
        add_gguf(store, tiny_gguf(tmp_path / "m.gguf", "model"), base="default")
    with pytest.raises(ModelFileError, match="LoRA adapters only"):
        add_gguf(store, tiny_gguf(tmp_path / "cv.gguf", "adapter", adapter_type="control"))
    assert store.models() == []
