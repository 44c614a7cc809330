"""The llama.cpp engine's sampler: pure logic on synthetic logits (no model needed).

A wrong draw shows up to users as answers that ignore temperature or top_p, or a
masked (forbidden) token slipping into constrained output.
"""

from __future__ import annotations

import numpy as np
import pytest

from ocak.engines.llamacpp.sampling import Sampler, SamplingParams, draw, nucleus


def sample_many(weights: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.bincount([draw(weights, rng.random()) for _ in range(n)], minlength=len(weights))


def test_draw_follows_the_weights_across_blocks() -> None:
    # 3,000 entries: several 1,024-entry blocks, the mass spread over all of them.
    weights = np.zeros(3000, dtype=np.float32)
    weights[[5, 1500, 2999]] = [1.0, 2.0, 1.0]
    counts = sample_many(weights, 20_000)
    assert set(np.flatnonzero(counts)) == {5, 1500, 2999}
    assert counts[1500] / 20_000 == pytest.approx(0.5, abs=0.02)
    assert counts[5] / 20_000 == pytest.approx(0.25, abs=0.02)


def test_draw_never_picks_a_zero_weight_token_even_at_the_edges() -> None:
    weights = np.zeros(2048, dtype=np.float32)
    weights[1023] = 1.0  # last entry of the first block, followed by zeros
    for u in (0.0, 0.5, 0.999999, 1.0):
        assert draw(weights, u) == 1023


def test_nucleus_keeps_the_smallest_top_set_reaching_p() -> None:
    probs = np.array([0.05, 0.5, 0.3, 0.1, 0.05], dtype=np.float32)
    kept = np.flatnonzero(nucleus(probs, 0.8))
    assert set(kept) == {1, 2}  # 0.5 + 0.3 reaches 0.8
    assert set(np.flatnonzero(nucleus(probs, 0.81))) == {1, 2, 3}
    assert set(np.flatnonzero(nucleus(probs, 0.1))) == {1}


def test_nucleus_on_a_flat_distribution_keeps_enough_tokens() -> None:
    probs = np.full(1000, 1 / 1000, dtype=np.float32)
    assert len(np.flatnonzero(nucleus(probs, 0.5))) == 500


def test_greedy_takes_the_highest_logit() -> None:
    s = Sampler(SamplingParams(temperature=0.0))
    assert [s.sample(np.array([0.1, 3.0, 2.9], np.float32)) for _ in range(5)] == [1] * 5


def test_same_seed_same_draws_and_temperature_sharpens() -> None:
    logits = np.log(np.array([0.2, 0.3, 0.5], np.float32))

    def draws(seed: int, temperature: float) -> list[int]:
        s = Sampler(SamplingParams(temperature=temperature, seed=seed))
        return [s.sample(logits) for _ in range(400)]

    assert draws(7, 1.0) == draws(7, 1.0)
    assert draws(7, 1.0) != draws(8, 1.0)
    cold = draws(1, 0.2).count(2) / 400
    warm = draws(1, 1.0).count(2) / 400
    assert warm == pytest.approx(0.5, abs=0.08)
    assert cold > 0.85  # 0.92 in theory: 0.5 ** 5 against 0.3 ** 5 and 0.2 ** 5


def test_frequency_penalty_moves_away_from_repeated_tokens() -> None:
    logits = np.array([2.0, 1.9, -5.0], np.float32)
    plain = Sampler(SamplingParams(temperature=0.0))
    assert [plain.sample(logits) for _ in range(3)] == [0, 0, 0]
    penalized = Sampler(SamplingParams(temperature=0.0, frequency_penalty=0.5))
    assert [penalized.sample(logits) for _ in range(3)] == [0, 1, 0]
    assert logits[0] == 2.0  # llama.cpp's buffer is left as it was
