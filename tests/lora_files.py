"""GGUF files the adapter tests make: an F16 copy of a model, a random LoRA adapter for it,
and the reference model with that LoRA merged into its weights.

Written with the ``gguf`` package (llama.cpp's own reader and writer). A LoRA adapter in
GGUF, as llama.cpp's ``convert_lora_to_gguf.py`` writes it: ``general.type = adapter``,
``adapter.type = lora``, ``adapter.lora.alpha``, and for each adapted weight
``W`` (numpy shape ``[n_out, n_in]``) two tensors ``W.lora_a`` ``[rank, n_in]`` and
``W.lora_b`` ``[n_out, rank]``. llama.cpp adds ``scale * alpha / rank * B @ A @ x``.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

_SKIP = {"general.architecture", "general.file_type", "general.type"}


def _copy_fields(reader: gguf.GGUFReader, writer: gguf.GGUFWriter) -> None:
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in _SKIP:
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), kind, sub_type=sub)


def _weights(reader: gguf.GGUFReader) -> dict[str, np.ndarray]:
    """Every tensor as float32, numpy shape (rows, columns)."""
    out = {}
    for t in reader.tensors:
        data = gguf.quants.dequantize(t.data, t.tensor_type)
        out[t.name] = np.asarray(data, dtype=np.float32).reshape(list(reversed(t.shape.tolist())))
    return out


def _write_model(reader: gguf.GGUFReader, weights: dict[str, np.ndarray], out: Path) -> Path:
    arch = str(reader.fields["general.architecture"].contents())
    writer = gguf.GGUFWriter(str(out), arch)
    _copy_fields(reader, writer)
    writer.add_type("model")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    for name, w in weights.items():
        # 1-D tensors (norms) stay F32, as llama.cpp's converter keeps them
        writer.add_tensor(name, w if w.ndim == 1 else w.astype(np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def f16_model(source: Path, out: Path) -> Path:
    """``source`` (any quantization) with its weights in F16."""
    reader = gguf.GGUFReader(str(source))
    return _write_model(reader, _weights(reader), out)


def random_lora(
    base: Path,
    out: Path,
    *,
    rank: int = 8,
    alpha: float = 16.0,
    seed: int = 0,
    std: float = 0.05,
    targets: tuple[str, ...] = ("attn_q", "attn_v"),
    misfit: bool = False,
) -> Path:
    """A random LoRA adapter for ``base``, on the ``targets`` weights of every layer;
    ``misfit``: with input sizes the base does not have (llama.cpp must refuse it)."""
    reader = gguf.GGUFReader(str(base))
    arch = str(reader.fields["general.architecture"].contents())
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_type("adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", alpha)
    for t in reader.tensors:
        if t.name.split(".")[-2] not in targets:
            continue
        n_in, n_out = (int(n) for n in t.shape[:2])  # ggml order: columns first
        n_in += 32 if misfit else 0
        a = rng.normal(0.0, std, (rank, n_in)).astype(np.float32)
        b = rng.normal(0.0, std, (n_out, rank)).astype(np.float32)
        writer.add_tensor(f"{t.name}.lora_a", a)
        writer.add_tensor(f"{t.name}.lora_b", b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def merged_model(base: Path, lora: Path, out: Path, *, scale: float = 1.0) -> Path:
    """``base`` with ``lora`` merged into its weights (``W + scale * alpha / rank * B @ A``),
    in F16: the reference an adapter applied at run time must match."""
    reader = gguf.GGUFReader(str(base))
    weights = _weights(reader)
    adapter = gguf.GGUFReader(str(lora))
    alpha = float(adapter.fields["adapter.lora.alpha"].contents())
    parts = _weights(adapter)
    for name in [n for n in parts if n.endswith(".lora_a")]:
        target = name.removesuffix(".lora_a")
        a, b = parts[name], parts[f"{target}.lora_b"]
        weights[target] = weights[target] + scale * alpha / a.shape[0] * (b @ a)
    return _write_model(reader, weights, out)
