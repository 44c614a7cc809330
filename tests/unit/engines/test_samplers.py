"""top_k, min_p and llama.cpp's repeat penalty in the numpy sampler (synthetic logits).

Users see these as: top_k=1 answering like greedy, min_p never picking the unlikely
tail, a repeat penalty that makes a looping model move on, and a seed that still
gives the same answer.
"""

from __future__ import annotations

import numpy as np
import pytest

from ocak.engines.llamacpp.sampling import PenaltyWindow, Sampler, SamplingParams, top_k_only

LOGITS = np.log(np.array([0.05, 0.4, 0.3, 0.15, 0.1] + [1e-4] * 2000, np.float32))


def draws(params: SamplingParams, n: int = 300) -> list[int]:
    s = Sampler(params)
    return [s.sample(LOGITS) for _ in range(n)]


def test_top_k_1_is_greedy_at_any_temperature() -> None:
    assert set(draws(SamplingParams(temperature=1.5, top_k=1, seed=3))) == {1}


def test_top_k_keeps_exactly_k_most_likely() -> None:
    assert set(draws(SamplingParams(top_k=3, seed=1))) == {1, 2, 3}
    w = np.array([1.0, 0.5, 0.5, 0.5, 0.1], np.float32)
    assert np.count_nonzero(top_k_only(w, 2)) == 2  # ties at the edge: still k


def test_without_top_k_the_tail_is_drawn_sometimes() -> None:
    assert max(draws(SamplingParams(seed=1), 2000)) > 4


def test_min_p_cuts_tokens_below_a_share_of_the_top_one() -> None:
    # 0.3 >= 0.5 * 0.4 is kept; 0.15 and below are not
    assert set(draws(SamplingParams(min_p=0.5, seed=2))) == {1, 2}


def test_same_seed_same_draws_with_the_new_samplers() -> None:
    p = SamplingParams(top_k=4, min_p=0.1, repeat_penalty=1.3, seed=9)
    assert draws(p) == draws(p)
    assert draws(p) != draws(SamplingParams(top_k=4, min_p=0.1, repeat_penalty=1.3, seed=10))


def test_repeat_penalty_divides_positive_and_multiplies_negative_logits() -> None:
    logits = np.array([2.0, -2.0, 1.9, -2.1], np.float32)
    s = Sampler(SamplingParams(temperature=0.0, repeat_penalty=2.0))
    assert s.sample(logits) == 0
    # token 0 now scores 1.0 < 1.9: greedy moves on instead of repeating
    assert s.sample(logits) == 2
    assert logits[0] == 2.0  # the engine's buffer is left as it was


def test_repeat_penalty_off_repeats_and_window_zero_turns_it_off() -> None:
    logits = np.array([2.0, 1.9], np.float32)
    for p in (
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=0.0, repeat_penalty=3.0, repeat_last_n=0),
    ):
        s = Sampler(p)
        assert [s.sample(logits) for _ in range(3)] == [0, 0, 0]


def test_penalty_window_forgets_tokens_older_than_n_and_minus_one_keeps_all() -> None:
    w = PenaltyWindow(2)
    for t in (5, 6, 7):
        w.push(t)
    assert dict(w.counts) == {6: 1, 7: 1}
    everything = PenaltyWindow(-1)
    for t in range(100):
        everything.push(t % 3)
    assert dict(everything.counts) == {0: 34, 1: 33, 2: 33}


def test_the_servers_default_cap_shrinks_to_the_context_instead_of_refusing() -> None:
    from ocak.engines.threaded import completion_budget
    from ocak.errors import ContextLengthExceeded

    assert completion_budget(100, None, 2048, soft=512) == 512
    assert completion_budget(1800, None, 2048, soft=512) == 248  # the rest of the window
    with pytest.raises(ContextLengthExceeded):
        completion_budget(1800, 512, 2048, soft=512)  # the client's own max_tokens: 400


@pytest.mark.parametrize("seed", range(40))
def test_top_k_indices_match_a_full_stable_sort(seed: int) -> None:
    """The pre-filtered top-k picks what sorting the whole vocabulary would: the same
    tokens in the same order, ties at the edge to the lowest ids (coarse values tie often)."""
    from ocak.engines.llamacpp.sampling import top_k_indices

    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 60_000))
    k = int(rng.integers(1, min(n, 300)))
    coarse = seed % 2 == 0
    values = (rng.integers(-4, 4, size=n) if coarse else rng.standard_normal(n) * 3).astype(
        np.float32
    )
    expected = np.argsort(-values, kind="stable")[:k]
    assert np.array_equal(top_k_indices(values, k), expected)
