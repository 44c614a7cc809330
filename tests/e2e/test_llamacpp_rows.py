"""What the scheduler's exactness rests on, checked on the real llama.cpp and the default model.

A prompt's rows come out bit for bit the same however they are grouped into calls, as
long as each piece has fewer than ``TILE_ROWS`` of them (flash attention takes them one
at a time); past that they are tiled and the split shows. The scheduler puts short chunks
of one prompt into one call on the strength of the first fact, and keeps longer chunks
in calls of their own because of the second. A llama.cpp that changes either fails here.
"""

from __future__ import annotations

from collections.abc import Iterator

import llama_cpp as C
import numpy as np
import pytest

from ocak.engines.llamacpp.model import LlamaModel
from ocak.engines.llamacpp.sampling import logits_view
from ocak.engines.llamacpp.scheduler import TILE_ROWS
from ocak.models.store import default_model_path

TEXT = (
    "Story number 7. You are a storyteller. Write a long and detailed story about a dragon "
    "who is afraid of fire. Describe the place, the people, and everything that happens. "
) * 4


class Context:
    """A context of a few separate KV streams, as the scheduler makes them."""

    def __init__(self, model: LlamaModel) -> None:
        params = C.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_ubatch = 4 * 512, 512, 512
        params.n_seq_max, params.n_threads, params.n_threads_batch = 4, 2, 2
        params.kv_unified = False
        self.ctx = C.llama_init_from_model(model.ptr, params)
        self.mem = C.llama_get_memory(self.ctx)
        self.batch = C.llama_batch_init(512, 0, 1)
        self.n_vocab = model.n_vocab
        self.tokens = model.tokenize(TEXT)

    def last_logits(
        self, n: int, splits: list[int], seq: int = 0, beside: tuple[tuple[int, int], ...] = ()
    ) -> np.ndarray:
        """Logits after the first ``n`` tokens, computed in calls ending at ``splits``, each
        call also holding fresh prompts of other sequences (``beside``: seq, length)."""
        C.llama_memory_seq_rm(self.mem, seq, -1, -1)
        start, b, row = 0, self.batch, 0
        for end in [*splits, n]:
            k = 0
            for i in range(start, end):
                self._put(k, i, seq, i == n - 1)
                row = k if i == n - 1 else row
                k += 1
            for other, length in beside:
                C.llama_memory_seq_rm(self.mem, other, -1, -1)
                for i in range(length):
                    self._put(k, i, other, False)
                    k += 1
            b.n_tokens = k
            assert C.llama_decode(self.ctx, b) == 0
            start = end
        return logits_view(self.ctx, row, self.n_vocab).copy()

    def _put(self, k: int, pos: int, seq: int, logits: bool) -> None:
        b = self.batch
        b.token[k], b.pos[k], b.n_seq_id[k] = self.tokens[pos], pos, 1
        b.seq_id[k][0], b.logits[k] = seq, logits

    def close(self) -> None:
        C.llama_batch_free(self.batch)
        C.llama_free(self.ctx)


@pytest.fixture(scope="module")
def context() -> Iterator[Context]:
    model = LlamaModel(default_model_path())
    ctx = Context(model)
    yield ctx
    ctx.close()
    model.close()


def test_short_pieces_come_out_the_same_however_they_are_grouped(context: Context) -> None:
    n = TILE_ROWS - 1
    whole = context.last_logits(n, [])
    for splits in ([58], [20, 58], [10, 20, 30, 40, 50, 60]):
        assert np.array_equal(whole, context.last_logits(n, splits)), splits
    # and beside other sequences' prompts in the same calls
    mixed = context.last_logits(n, [40], seq=1, beside=((0, 7), (2, 30)))
    assert np.array_equal(whole, mixed)


def test_a_long_chunk_split_into_short_pieces_comes_out_otherwise(context: Context) -> None:
    # why a chunk of TILE_ROWS or more keeps a call of its own
    n = TILE_ROWS + 36
    assert not np.array_equal(context.last_logits(n, []), context.last_logits(n, [60]))
