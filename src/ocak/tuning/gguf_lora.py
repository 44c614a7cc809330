"""A trained peft LoRA written as a GGUF adapter llama.cpp loads (``llama_adapter_lora_init``).

The layout is the one llama.cpp's ``convert_lora_to_gguf.py`` writes (that script is not
in the ``gguf`` package; this is a re-implementation for the architectures ocak trains):

- ``general.architecture`` the base's, ``general.type = adapter``, ``adapter.type = lora``,
  ``adapter.lora.alpha`` (llama.cpp adds ``scale * alpha / rank * B @ A @ x``, peft's
  ``lora_alpha / r`` scaling, so a served adapter at scale 1 is the trained one);
- per adapted weight, named through ``gguf``'s tensor name map (``model.layers.3.self_attn
  .q_proj`` -> ``blk.3.attn_q.weight``), two tensors ``<name>.lora_a`` with numpy shape
  ``[rank, n_in]`` and ``<name>.lora_b`` ``[n_out, rank]`` (ggml lists them reversed);
- where llama.cpp's converter permuted the rows of ``attn_q`` / ``attn_k`` (llama: RoPE
  pairs interleaved per head), ``lora_b`` gets the same row permutation (``lora_a`` acts
  on the input side, which is not permuted).

Tensors are float32: an adapter for the 135M default at rank 8 on every projection is
about 10 MB, and f32 keeps what was trained exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ocak.errors import OcakError


class AdapterWriteError(OcakError):
    """A trained weight that has no GGUF name for the base's architecture."""


@dataclass(frozen=True, slots=True)
class LoraPair:
    """One adapted weight: its transformers module name and its A and B matrices."""

    module: str  # e.g. model.layers.0.self_attn.q_proj
    a: np.ndarray  # [rank, n_in]
    b: np.ndarray  # [n_out, rank]


def permute_rows(w: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """llama.cpp's ``LlamaModel.permute`` of a query/key weight's rows (its output side):
    the inverse of what transformers' GGUF loader undoes."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    rows = w.shape[0]
    out = w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2)
    return np.ascontiguousarray(out.reshape(w.shape))


def lora_pairs(model: Any, adapter: str = "default") -> list[LoraPair]:
    """The A and B matrices of every LoRA layer of a peft model, as float32 numpy."""
    from peft.tuners.lora import LoraLayer

    pairs = []
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer) or adapter not in module.lora_A:
            continue
        a = module.lora_A[adapter].weight.detach().float().cpu().numpy()  # type: ignore[operator]
        b = module.lora_B[adapter].weight.detach().float().cpu().numpy()  # type: ignore[operator]
        plain = name.removeprefix("base_model.model.")
        pairs.append(LoraPair(plain, np.ascontiguousarray(a), np.ascontiguousarray(b)))
    return pairs


def gguf_names(arch: str, n_layers: int) -> Any:
    """``gguf``'s tensor name map for ``arch`` (a GGUF architecture name)."""
    import gguf

    by_name = {name: key for key, name in gguf.MODEL_ARCH_NAMES.items()}
    if arch not in by_name:
        raise AdapterWriteError(f"the gguf package knows no architecture '{arch}'")
    return gguf.get_tensor_name_map(by_name[arch], n_layers)


def tensor_name(names: Any, module: str) -> str:
    """The GGUF name of the weight of ``module`` (``blk.N.attn_q.weight``)."""
    found = names.get_name(f"{module}.weight", try_suffixes=(".weight",))
    if found is None:
        raise AdapterWriteError(f"no GGUF tensor name for '{module}'")
    return str(found)


def write_adapter(
    path: Path,
    pairs: Iterable[LoraPair],
    *,
    arch: str,
    n_layers: int,
    alpha: float,
    heads: int,
    kv_heads: int,
    permute_qk: bool,
    metadata: dict[str, str] | None = None,
) -> list[str]:
    """Write the GGUF LoRA at ``path``; the tensor names written, in order."""
    import gguf

    names = gguf_names(arch, n_layers)
    tensors: list[tuple[str, np.ndarray]] = []
    for pair in pairs:
        target = tensor_name(names, pair.module)
        b = pair.b
        if permute_qk and target.endswith(".attn_q.weight"):
            b = permute_rows(b, heads, heads)
        elif permute_qk and target.endswith(".attn_k.weight"):
            b = permute_rows(b, heads, kv_heads)
        tensors += [(f"{target}.lora_a", pair.a), (f"{target}.lora_b", b)]
    if not tensors:
        raise AdapterWriteError("the model has no LoRA layers to write")
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    for key, value in (metadata or {}).items():
        writer.add_string(key, value)
    for name, tensor in tensors:
        writer.add_tensor(name, np.ascontiguousarray(tensor, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return [name for name, _ in tensors]
