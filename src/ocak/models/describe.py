"""What ``ocak models show`` says of a model, read from its files (no weights loaded)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ocak.models.gguf_header import read_metadata
from ocak.models.manifest import Manifest
from ocak.models.source import read_json_object, stored_quantization
from ocak.models.store import ModelSpec, disk_size

# llama.cpp's ``general.file_type`` values (``llama_ftype``), for installs without ``gguf``
_FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
    29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0",
}  # fmt: skip


def describe(spec: ModelSpec, manifest: Manifest | None = None) -> dict[str, Any]:
    """Architecture, parameters, quantization, context length, chat template, licence,
    size and source, as far as the files tell."""
    facts: dict[str, Any] = {"id": spec.id, "kind": spec.kind, "engine": spec.engine}
    if spec.engine == "llama.cpp" and spec.path.is_file():
        facts.update(_gguf(spec.path))
    elif spec.path.is_dir():
        facts.update(_checkpoint(spec.path))
    facts["size"] = f"{disk_size(spec.path) / 2**20:.1f} MiB"
    facts["path"] = str(spec.path)
    if manifest is not None:
        if manifest.source is not None:
            source = manifest.source
            facts["source"] = f"{source.hub}: {source.repo} @ {source.revision[:12]}"
        if manifest.license:
            facts["license"] = manifest.license
        if manifest.base:
            facts["base"] = manifest.base
        if manifest.params:
            facts["recommended"] = ", ".join(f"{k}={v}" for k, v in manifest.params.items())
    return {k: v for k, v in facts.items() if v not in (None, "")}


def _gguf(path: Path) -> dict[str, Any]:
    meta = read_metadata(path)
    arch = str(meta.get("general.architecture") or "")
    params = meta.get("general.size_label") or meta.get("general.parameter_count")
    file_type = meta.get("general.file_type")
    quant = _FILE_TYPES.get(int(file_type)) if isinstance(file_type, int) else None
    license_ = meta.get("general.license")
    return {
        "architecture": arch,
        "name": meta.get("general.name"),
        "parameters": params,
        "quantization": quant or stored_quantization(path, "llama.cpp"),
        "context length": meta.get(f"{arch}.context_length"),
        "license": license_,
        "chat template": meta.get("tokenizer.chat_template"),
        "lora alpha": meta.get("adapter.lora.alpha"),  # adapters only
    }


def _checkpoint(folder: Path) -> dict[str, Any]:
    config = read_json_object(folder / "config.json")
    tokenizer = read_json_object(folder / "tokenizer_config.json")
    template = tokenizer.get("chat_template")
    jinja = folder / "chat_template.jinja"
    if not template and jinja.is_file():
        template = jinja.read_text(encoding="utf-8")
    return {
        "architecture": config.get("model_type") or ",".join(config.get("architectures", [])),
        "quantization": stored_quantization(folder, "ctranslate2"),
        "context length": config.get("max_position_embeddings"),
        "chat template": template if isinstance(template, str) else None,
    }
