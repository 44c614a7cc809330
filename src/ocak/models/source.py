"""What a conversion source is, read from its headers alone (no torch, no weights loaded).

A source is a Hugging Face checkpoint folder (``config.json`` + safetensors or
``pytorch_model*.bin`` + tokenizer) or a GGUF file. ``inspect_source`` finds the
model family, the number of parameters (for the memory estimate) and a
fingerprint that tells a later run whether the source changed.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ocak.errors import OcakError

# GGUF ``general.architecture`` names that differ from transformers' ``model_type``.
GGUF_ARCH_TO_MODEL_TYPE = {
    "qwen2moe": "qwen2_moe",
    "qwen3moe": "qwen3_moe",
    "gptneox": "gpt_neox",
    "gpt-neox": "gpt_neox",
    "command-r": "cohere",
    "stablelm": "stablelm",
}
DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
}  # fmt: skip
TORCH_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; {} when it is missing, unreadable or not an object
    (model folders carry optional JSON files: configs, metadata, templates)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class SourceError(OcakError):
    """A conversion source that is missing or not a checkpoint ocak can read."""


@dataclass(frozen=True, slots=True)
class SourceInfo:
    path: Path
    kind: str  # "hf" or "gguf"
    model_type: str
    n_params: int
    bytes_per_param: int
    size_bytes: int
    mtime_ns: int
    context_length: int = 0

    def fingerprint(self) -> dict[str, Any]:
        """Identifies this exact source: a changed file converts again."""
        return {"path": str(self.path), "size": self.size_bytes, "mtime_ns": self.mtime_ns}


def inspect_source(path: Path) -> SourceInfo:
    if not path.exists():
        raise SourceError(f"{path} does not exist")
    if path.is_dir():
        return _inspect_hf(path)
    with path.open("rb") as f:
        magic = f.read(4)
    if magic == b"GGUF":
        return _inspect_gguf(path)
    raise SourceError(
        f"{path} is neither a Hugging Face checkpoint folder (with config.json) nor a GGUF file"
    )


def _inspect_hf(folder: Path) -> SourceInfo:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise SourceError(f"{folder} has no config.json: it is not a Hugging Face checkpoint")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    model_type = str(config.get("model_type") or "")
    if not model_type:
        raise SourceError(f"{config_path} names no model_type")
    weights = sorted(folder.glob("*.safetensors"))
    n_params = sum(_safetensors_params(w) for w in weights)
    dtype = str(config.get("dtype") or config.get("torch_dtype") or "float32")
    per = TORCH_DTYPE_BYTES.get(dtype, 4)
    if not weights:
        bins = sorted(folder.glob("pytorch_model*.bin"))
        if not bins:
            raise SourceError(f"{folder} has no weights (*.safetensors or pytorch_model*.bin)")
        n_params = sum(b.stat().st_size for b in bins) // per
        weights = bins
    files = [f for f in folder.iterdir() if f.is_file()]
    return SourceInfo(
        path=folder,
        kind="hf",
        model_type=model_type,
        n_params=n_params,
        bytes_per_param=per,
        size_bytes=sum(f.stat().st_size for f in files),
        mtime_ns=max(f.stat().st_mtime_ns for f in files),
        context_length=int(config.get("max_position_embeddings") or 0),
    )


def _safetensors_params(path: Path) -> int:
    """Number of elements in a safetensors file, from its JSON header."""
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    total = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        n = 1
        for dim in entry["shape"]:
            n *= int(dim)
        total += n
    return total


def _inspect_gguf(path: Path) -> SourceInfo:
    try:
        from gguf import GGUFReader
    except ImportError as exc:
        raise SourceError(
            "reading a GGUF file needs the 'convert' extra: pip install 'ocak[convert]'"
        ) from exc
    reader = GGUFReader(str(path))
    arch = _field(reader, "general.architecture") or "llama"
    n_params = sum(int(t.n_elements) for t in reader.tensors)
    context = _field(reader, f"{arch}.context_length")
    stat = path.stat()
    return SourceInfo(
        path=path,
        kind="gguf",
        model_type=GGUF_ARCH_TO_MODEL_TYPE.get(arch, arch),
        n_params=n_params,
        bytes_per_param=4,
        size_bytes=stat.st_size,
        mtime_ns=stat.st_mtime_ns,
        context_length=int(context) if context else 0,
    )


def _field(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    if field is None:
        return None
    value = field.parts[field.data[0]]
    if field.types and field.types[0].name == "STRING":
        return bytes(value).decode("utf-8", "replace")
    return value.tolist()[0] if hasattr(value, "tolist") else value


def stored_quantization(path: Path, engine: str) -> str | None:
    """The weight format of a servable model, for ``ocak models list`` (None if unknown)."""
    if engine == "ctranslate2":
        value = read_json_object(path / "ocak.json").get("quantization")
        return str(value) if value else None
    try:
        import gguf

        reader = gguf.GGUFReader(str(path))
        file_type = _field(reader, "general.file_type")
        if file_type is None:
            return None
        return str(gguf.LlamaFileType(int(file_type)).name).removeprefix("MOSTLY_")
    except Exception:  # gguf missing (no convert extra) or an unknown file type
        return None
