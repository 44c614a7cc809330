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
from ocak.structured.budget import Budget, Vocab, closing_vocab

_lock = threading.Lock()


def tokenizer_for(model: LlamaModel) -> llg.LLTokenizer:
    """llguidance's view of the model's vocabulary (built once per model, about 1 s)."""
    with _lock:
        tok = getattr(model, "_llg_tokenizer", None)
        if tok is None:
            tok = lltokenizer_from_vocab(model.vocab, eos_token=model.eos)
            model._llg_tokenizer = tok  # type: ignore[attr-defined]
        return tok


def vocab_for(model: LlamaModel) -> Vocab:
    """The model's closing tokens for ``Budget`` (found once per model)."""
    tok = tokenizer_for(model)
    with _lock:
        found: Vocab | None = getattr(model, "_llg_vocab", None)
        if found is None:
            found = closing_vocab(tok, {model.eos})
            model._llg_vocab = found  # type: ignore[attr-defined]
        return found


class GrammarMask:
    """One sequence's grammar state; implements the scheduler's ``LogitsMask``.

    With ``max_tokens`` the answer also finishes in budget: near the end, the mask
    lets through only the next token of the shortest way to close the document
    (see ``ocak.structured.budget``); a budget too small for any valid answer is
    a 400 here, before decoding.
    """

    def __init__(self, model: LlamaModel, grammar: str, max_tokens: int | None = None) -> None:
        self.n_vocab = model.n_vocab
        self.matcher = llg.LLMatcher(tokenizer_for(model), grammar, log_level=0)
        if self.matcher.is_error():
            raise InvalidRequest(
                f"The grammar cannot be used: {self.matcher.get_error()}",
                param="response_format",
            )
        self._bits = np.zeros((self.n_vocab + 31) // 32, dtype=np.int32)
        self.budget: Budget | None = None
        if max_tokens is not None:
            self.budget = Budget(self.matcher, vocab_for(model), max_tokens)

    def apply(self, logits: Logits) -> None:
        forced = self.budget.next_forced() if self.budget is not None else None
        if forced is not None:
            keep = logits[forced]
            logits[:] = -np.inf
            logits[forced] = keep
            return
        self.matcher.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
        if self.matcher.is_error():
            raise EngineError(f"constrained decoding failed: {self.matcher.get_error()}")
        allowed = np.unpackbits(self._bits.view(np.uint8), bitorder="little")[: self.n_vocab]
        logits[allowed == 0] = -np.inf

    def accept(self, token: int) -> None:
        self.matcher.consume_token(token)
        if self.budget is not None:
            self.budget.accepted(token)

    def is_done(self) -> bool:
        if self.budget is not None and self.budget.finished():
            return True
        return bool(self.matcher.is_stopped())
