"""Per-sequence sampler chains over llama.cpp's sampler API.

Each sequence in a batch owns its chain, so temperature, top_p, seed and
penalties are its own. Constrained decoding adds a logits hook that runs
before the chain (see ``LogitsMask``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Protocol

import llama_cpp as C

# llama.cpp treats this seed value as "pick one at random".
_RANDOM_SEED = 0xFFFFFFFF
PENALTY_LAST_N = 64


@dataclass(frozen=True, slots=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


def chain_seed(seed: int | None) -> int:
    """A 32-bit seed for llama.cpp's dist sampler; a random one when none is given."""
    if seed is None:
        return int.from_bytes(os.urandom(4), "little") % _RANDOM_SEED
    value = seed & 0xFFFFFFFF
    return value if value != _RANDOM_SEED else 0


class LogitsMask(Protocol):
    """Restricts the next token (constrained decoding); applied to the logits in place."""

    def apply(self, logits: Any, n_vocab: int) -> None: ...

    def accept(self, token: int) -> None: ...

    def is_done(self) -> bool: ...


class Sampler:
    """One sequence's sampler chain; free it with ``close``."""

    def __init__(self, params: SamplingParams, n_vocab: int) -> None:
        self.params = params
        self.chain = C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
        add = C.llama_sampler_chain_add
        if params.presence_penalty or params.frequency_penalty:
            add(
                self.chain,
                C.llama_sampler_init_penalties(
                    n_vocab, PENALTY_LAST_N, 1.0, params.frequency_penalty, params.presence_penalty
                ),
            )
        if params.temperature <= 0.0:
            add(self.chain, C.llama_sampler_init_greedy())
        else:
            if params.top_p < 1.0:
                add(self.chain, C.llama_sampler_init_top_p(params.top_p, 1))
            add(self.chain, C.llama_sampler_init_temp(params.temperature))
            add(self.chain, C.llama_sampler_init_dist(chain_seed(params.seed)))

    def sample(self, ctx: Any, index: int) -> int:
        """Sample the next token from the logits of batch row ``index`` (and accept it)."""
        return int(C.llama_sampler_sample(self.chain, ctx, index))

    def close(self) -> None:
        if self.chain:
            C.llama_sampler_free(self.chain)
            self.chain = None
