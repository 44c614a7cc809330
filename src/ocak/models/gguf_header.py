"""A GGUF file's metadata, read from its header without loading the model or importing gguf.

``ocak doctor`` uses it to size the KV cache that ``serve`` would ask for (layers,
key/value heads and head sizes) before anything is allocated. Arrays (the
tokenizer's vocabulary) are skipped, not kept.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ocak.models.manifest import Kind
from ocak.models.store import ModelFileError

# GGUF value types -> struct format of a scalar (8 = string, 9 = array handled apart).
_SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
_STRING, _ARRAY = 8, 9
Value = int | float | bool | str | list[int] | None


def _read(f: BinaryIO, fmt: str) -> tuple[int | float | bool, ...]:
    size = struct.calcsize("<" + fmt)
    data = f.read(size)
    if len(data) != size:
        raise ModelFileError(f"{getattr(f, 'name', 'the file')} ends inside its GGUF header")
    return struct.unpack("<" + fmt, data)


def _string(f: BinaryIO) -> str:
    (n,) = _read(f, "Q")
    return f.read(int(n)).decode("utf-8", "replace")


def _value(f: BinaryIO, kind: int) -> Value:
    if kind in _SCALARS:
        return _read(f, _SCALARS[kind])[0]
    if kind == _STRING:
        return _string(f)
    if kind == _ARRAY:
        item, count = _read(f, "IQ")
        if item in _SCALARS:
            size = struct.calcsize("<" + _SCALARS[int(item)])
            if int(count) <= 1024 and item not in (6, 12):  # small int arrays: per-layer values
                return [int(v) for v in _read(f, _SCALARS[int(item)] * int(count))]
            f.seek(size * int(count), 1)
            return None
        for _ in range(int(count)):  # arrays of strings (the vocabulary) or of arrays
            _value(f, int(item))
        return None
    raise ModelFileError(f"unknown GGUF value type {kind}")


def read_metadata(path: Path) -> dict[str, Value]:
    """Every key of the header: scalars and strings as values, big arrays as None."""
    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise ModelFileError(f"{path} is not a GGUF file")
        (version,) = _read(f, "I")
        count_fmt = "I" if version == 1 else "Q"
        _tensors, n_kv = _read(f, count_fmt * 2)
        meta: dict[str, Value] = {}
        for _ in range(int(n_kv)):
            key = _string(f)
            (kind,) = _read(f, "I")
            meta[key] = _value(f, int(kind))
    return meta


@dataclass(frozen=True, slots=True)
class KvShape:
    """What one token costs in a model's KV cache."""

    layers: int
    kv_width: int  # key plus value elements per token and layer

    def bytes_for(self, tokens: int, bytes_per_element: int = 2) -> int:
        """Bytes of a cache of ``tokens`` tokens (llama.cpp's default cache type is f16)."""
        return self.layers * self.kv_width * tokens * bytes_per_element


def _number(v: Value) -> int:
    if isinstance(v, list):  # per-layer values: size for the largest
        return max(v) if v else 0
    if isinstance(v, str):  # llama.cpp's own metadata getter returns text
        return int(v) if v.strip().isdigit() else 0
    return int(v) if isinstance(v, (int, float)) else 0


def kv_shape(meta: Callable[[str], Value]) -> KvShape | None:
    """The KV cache shape from ``<arch>.block_count`` and the attention keys; None if unknown.

    ``meta`` looks a key up: ``read_metadata(path).get``, or a loaded model's getter.
    """
    arch = meta("general.architecture")
    if not isinstance(arch, str):
        return None
    layers = _number(meta(f"{arch}.block_count"))
    heads = _number(meta(f"{arch}.attention.head_count"))
    kv_heads = _number(meta(f"{arch}.attention.head_count_kv")) or heads
    embed = _number(meta(f"{arch}.embedding_length"))
    if not (layers and heads and embed):
        return None
    key_len = _number(meta(f"{arch}.attention.key_length")) or embed // heads
    value_len = _number(meta(f"{arch}.attention.value_length")) or embed // heads
    return KvShape(layers, kv_heads * (key_len + value_len))


def gguf_kind(meta: dict[str, Value], name: str) -> Kind:
    """What the GGUF file ``name`` with header ``meta`` holds: a LoRA ``adapter``
    (``general.type = adapter``) or a model (``chat``). Adapters of other types (control
    vectors) are refused by name."""
    if meta.get("general.type") != "adapter":
        return "chat"
    if meta.get("adapter.type") != "lora":
        raise ModelFileError(
            f"{name} is a {meta.get('adapter.type') or 'non-LoRA'} adapter; "
            "ocak applies LoRA adapters only"
        )
    return "adapter"
