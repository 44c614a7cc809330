"""Constrained decoding inside the batch loop: llguidance token masks on llama.cpp logits.

Each constrained sequence has its own matcher. Before sampling, the matcher's
mask of allowed tokens is applied to that sequence's logits (disallowed tokens
get -inf); after sampling, the token is fed to the matcher. Masks cost tens of
microseconds per token, far below a decode step.
"""

from __future__ import annotations

import threading

import llguidance as llg
import numpy as np
from llguidance.llamacpp import lltokenizer_from_vocab

from ocak.engines.llamacpp.model import LlamaModel
from ocak.engines.llamacpp.sampling import Logits
from ocak.errors import EngineError, InvalidRequest

_lock = threading.Lock()


def tokenizer_for(model: LlamaModel) -> llg.LLTokenizer:
    """llguidance's view of the model's vocabulary (built once per model, about 1 s)."""
    with _lock:
        tok = getattr(model, "_llg_tokenizer", None)
        if tok is None:
            tok = lltokenizer_from_vocab(model.vocab, eos_token=model.eos)
            model._llg_tokenizer = tok  # type: ignore[attr-defined]
        return tok


class GrammarMask:
    """One sequence's grammar state; implements the scheduler's ``LogitsMask``."""

    def __init__(self, model: LlamaModel, grammar: str) -> None:
        self.n_vocab = model.n_vocab
        self.matcher = llg.LLMatcher(tokenizer_for(model), grammar, log_level=0)
        if self.matcher.is_error():
            raise InvalidRequest(
                f"The grammar cannot be used: {self.matcher.get_error()}",
                param="response_format",
            )
        self._bits = np.zeros((self.n_vocab + 31) // 32, dtype=np.int32)

    def apply(self, logits: Logits) -> None:
        self.matcher.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
        if self.matcher.is_error():
            raise EngineError(f"constrained decoding failed: {self.matcher.get_error()}")
        allowed = np.unpackbits(self._bits.view(np.uint8), bitorder="little")[: self.n_vocab]
        logits[allowed == 0] = -np.inf

    def accept(self, token: int) -> None:
        self.matcher.consume_token(token)

    def is_done(self) -> bool:
        return bool(self.matcher.is_stopped())
