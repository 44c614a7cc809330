"""Helpers for the CTranslate2 tests: the converted default model, tiny checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ocak.models.store import default_model_path

CT2_NAME = "smollm2-135m-instruct-int8"


def ocak_cli(*args: str, data_dir: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run ``ocak ARGS`` in a child process with its own data folder."""
    return subprocess.run(
        [sys.executable, "-m", "ocak", *args],
        env={**os.environ, "OCAK_DATA_DIR": str(data_dir)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def convert_default_model(data_dir: Path) -> Path:
    """The embedded GGUF converted to CTranslate2 int8 with the real CLI.

    The converter itself makes this a cache: a second run finds the model and
    does nothing (a changed source or an interrupted run converts again).
    """
    result = ocak_cli(
        "models",
        "convert",
        str(default_model_path()),
        "--name",
        CT2_NAME,
        "--quantization",
        "int8",
        data_dir=data_dir,
    )
    if result.returncode != 0:
        raise RuntimeError(f"conversion failed ({result.returncode}):\n{result.stderr}")
    path = data_dir / "models" / CT2_NAME
    assert (path / "model.bin").is_file(), result.stdout + result.stderr
    return path


WORDS = tuple(
    [
        "hello",
        "world",
        "the",
        "a",
        "of",
        "and",
        "to",
        "in",
        "is",
        "it",
        "you",
        "that",
        "he",
        "was",
        "for",
        "on",
        "are",
        "with",
        "as",
        "I",
        "his",
        "they",
        "be",
        "at",
        "one",
        "have",
        "this",
        "from",
        "or",
        "had",
        "by",
        "hot",
        "word",
        "but",
        "what",
        "some",
        "we",
        "can",
        "out",
        "other",
        "were",
        "all",
        "there",
        "when",
        "up",
        "use",
        "your",
        "how",
        "said",
        "an",
        "each",
        "she",
        "which",
        "do",
        "their",
        "time",
        "if",
        "will",
        "way",
        "about",
        "many",
        "then",
        "them",
    ]
)

# Tiny configurations per family: 2 layers, 4 heads, hidden 64. RoPE families get a
# base other than 10000 so a converter that ignores it shows in the scores.
TINY: dict[str, dict[str, object]] = {
    "llama": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "rope_theta": 50000.0},
    "mistral": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2, "rope_theta": 50000.0},
    "qwen2": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "rope_theta": 50000.0},
    "phi3": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 4, "rope_theta": 50000.0},
    "gpt_neox": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 50000.0,
            "partial_rotary_factor": 0.5,
        },
    },
    "gpt2": {"n_embd": 64, "n_layer": 2, "n_head": 4},
    "gptj": {"n_embd": 64, "n_layer": 2, "n_head": 4, "rotary_dim": 8},
    "falcon": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4},
    # No CTranslate2 converter for these two.
    "mpt": {"d_model": 64, "n_layers": 2, "n_heads": 4},
    "gpt_neo": {"hidden_size": 64, "num_layers": 2, "num_heads": 4,
                "attention_types": [[["global", "local"], 1]]},
}  # fmt: skip


def write_tiny_checkpoint(folder: Path, family: str, **overrides: object) -> Path:
    """A random-weight checkpoint of ``family`` with a small word-level tokenizer."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for word in WORDS:
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    settings: dict[str, object] = {
        **TINY[family],
        # GPT-2 and GPT-J need the exact size; the others pad with extra ids (and
        # transformers' Qwen2 tokenizer adds a token of its own).
        "vocab_size": len(vocab) + (0 if family in ("gpt2", "gptj") else 8),
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        # Larger weights than the default init, so mistakes change the scores visibly.
        "initializer_range": 0.2,
        **overrides,
    }
    config = AutoConfig.for_model(family, **settings)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
