"""The GGUF LoRA writer on a tiny random Llama with a peft LoRA: the file says it is a LoRA
adapter for llama, every adapted weight is there under llama.cpp's name with ggml's shapes,
the values are the trained ones, and the query/key B rows follow llama.cpp's permutation
(the one transformers' GGUF loader undoes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

from ocak.tuning.gguf_lora import (
    AdapterWriteError,
    LoraPair,
    gguf_names,
    lora_pairs,
    permute_rows,
    tensor_name,
    write_adapter,
)
from ocak.tuning.spec import ALL_LINEAR

HEADS, KV_HEADS, HIDDEN, FFN, LAYERS, RANK = 4, 2, 32, 48, 2, 4


def tiny_lora_model() -> Any:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=HIDDEN, intermediate_size=FFN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=64,
    )  # fmt: skip
    lora = LoraConfig(
        r=RANK, lora_alpha=8, target_modules=list(ALL_LINEAR), init_lora_weights=False
    )  # fmt: skip  (random B, as after training)
    return get_peft_model(LlamaForCausalLM(config), lora)


def write(model: Any, path: Path, *, permute: bool = True) -> list[str]:
    return write_adapter(
        path, lora_pairs(model), arch="llama", n_layers=LAYERS, alpha=8.0,
        heads=HEADS, kv_heads=KV_HEADS, permute_qk=permute,
    )  # fmt: skip


def test_the_file_is_a_llama_lora_with_every_weight_named_and_shaped(tmp_path: Path) -> None:
    model = tiny_lora_model()
    written = write(model, tmp_path / "a.gguf")
    reader = gguf.GGUFReader(str(tmp_path / "a.gguf"))
    assert reader.fields["general.architecture"].contents() == "llama"
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.type"].contents() == "lora"
    assert reader.fields["adapter.lora.alpha"].contents() == pytest.approx(8.0)
    names = {t.name: t for t in reader.tensors}
    assert set(names) == set(written)
    kv = HIDDEN // HEADS * KV_HEADS
    shapes = {  # (n_in, n_out) of each weight
        "attn_q": (HIDDEN, HIDDEN), "attn_k": (HIDDEN, kv), "attn_v": (HIDDEN, kv),
        "attn_output": (HIDDEN, HIDDEN), "ffn_gate": (HIDDEN, FFN), "ffn_up": (HIDDEN, FFN),
        "ffn_down": (FFN, HIDDEN),
    }  # fmt: skip
    for layer in range(LAYERS):
        for short, (n_in, n_out) in shapes.items():
            a, b = (
                names[f"blk.{layer}.{short}.weight.lora_a"],
                names[f"blk.{layer}.{short}.weight.lora_b"],
            )
            # ggml lists the shape innermost first: A is [rank, n_in], B [n_out, rank]
            assert a.shape.tolist() == [n_in, RANK] and b.shape.tolist() == [RANK, n_out]
            assert a.tensor_type == b.tensor_type == gguf.GGMLQuantizationType.F32
    assert len(written) == 2 * LAYERS * len(shapes)


def test_values_are_the_trained_ones_with_query_and_key_rows_permuted(tmp_path: Path) -> None:
    model = tiny_lora_model()
    write(model, tmp_path / "a.gguf")
    stored = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(str(tmp_path / "a.gguf")).tensors}
    layer = model.base_model.model.model.layers[1]
    undo = LlamaTensorProcessor(
        config={"num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS}
    )
    for proj, short, n_kv in (("q_proj", "attn_q", HEADS), ("k_proj", "attn_k", KV_HEADS),
                              ("v_proj", "attn_v", None)):  # fmt: skip
        module = getattr(layer.self_attn, proj)
        a = module.lora_A["default"].weight.detach().numpy()
        b = module.lora_B["default"].weight.detach().numpy()
        got_b = stored[f"blk.1.{short}.weight.lora_b"]
        np.testing.assert_array_equal(stored[f"blk.1.{short}.weight.lora_a"], a)
        if n_kv is None:
            np.testing.assert_array_equal(got_b, b)  # v is not permuted
            continue
        assert not np.array_equal(got_b, b)
        # transformers' loader turns llama.cpp's rows back into the model's: so must ours
        back = undo._reverse_permute_weights(got_b, HEADS, n_kv)
        np.testing.assert_array_equal(back, b)
        # and the whole update B @ A is the permuted update of the full weight
        np.testing.assert_allclose(got_b @ a, permute_rows(b @ a, HEADS, n_kv), rtol=1e-6)


def test_without_permutation_the_rows_are_left_as_trained(tmp_path: Path) -> None:
    model = tiny_lora_model()
    write(model, tmp_path / "a.gguf", permute=False)
    stored = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(str(tmp_path / "a.gguf")).tensors}
    b = model.base_model.model.model.layers[0].self_attn.q_proj.lora_B["default"].weight
    np.testing.assert_array_equal(stored["blk.0.attn_q.weight.lora_b"], b.detach().numpy())


def test_weights_without_a_gguf_name_are_refused(tmp_path: Path) -> None:
    names = gguf_names("llama", 2)
    assert tensor_name(names, "model.layers.1.mlp.down_proj") == "blk.1.ffn_down.weight"
    with pytest.raises(AdapterWriteError, match="no GGUF tensor name"):
        tensor_name(names, "model.layers.0.mystery")
    with pytest.raises(AdapterWriteError, match="no architecture"):
        gguf_names("not-an-arch", 2)
    with pytest.raises(AdapterWriteError, match="no LoRA layers"):
        write_adapter(tmp_path / "x.gguf", [], arch="llama", n_layers=2, alpha=1, heads=4,
                      kv_heads=2, permute_qk=True)  # fmt: skip
    pair = LoraPair(
        "model.layers.0.bogus", np.zeros((1, 2), np.float32), np.zeros((2, 1), np.float32)
    )
    with pytest.raises(AdapterWriteError):
        write_adapter(tmp_path / "y.gguf", [pair], arch="llama", n_layers=2, alpha=1, heads=4,
                      kv_heads=2, permute_qk=True)  # fmt: skip
