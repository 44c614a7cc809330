"""Ranking: vector top-k over a matrix, the FTS5 query of a user's text, rank fusion.

Pure functions over ids and scores, so each ranking rule is testable apart from SQLite.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

RRF_K = 60  # reciprocal rank fusion: a chunk's score is the sum of 1 / (RRF_K + rank)
_TERM = re.compile(r"\w+")
_MAX_TERMS = 64

Ranked = list[tuple[int, float]]  # (chunk id, score), best first


def vector_top(
    ids: npt.NDArray[np.int64],
    vectors: npt.NDArray[np.float32],
    query: npt.NDArray[np.float32],
    depth: int,
) -> Ranked:
    """The ``depth`` rows most similar to ``query`` (unit vectors: dot product = cosine)."""
    if not len(ids):
        return []
    scores = vectors @ query
    if len(scores) > depth:
        top = np.argpartition(-scores, depth - 1)[:depth]
    else:
        top = np.arange(len(scores))
    order = top[np.lexsort((ids[top], -scores[top]))]  # ties: the older chunk first
    return [(int(ids[i]), float(scores[i])) for i in order]


def fts_query(text: str) -> str | None:
    """An FTS5 query matching any word of ``text``, each quoted so no punctuation is syntax.

    None when ``text`` has no word at all (only punctuation): nothing can match.
    """
    terms = list(dict.fromkeys(term.lower() for term in _TERM.findall(text)))[:_MAX_TERMS]
    return " OR ".join(f'"{term}"' for term in terms) or None


def fuse(rankings: Sequence[Ranked], k: int = RRF_K) -> Ranked:
    """Reciprocal rank fusion: rank-based, so cosines and BM25 scores need no common scale."""
    fused: dict[int, float] = {}
    for ranked in rankings:
        for rank, (cid, _) in enumerate(ranked, 1):
            fused[cid] = fused.get(cid, 0.0) + 1.0 / (k + rank)
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))


def ranks(ranked: Ranked) -> dict[int, int]:
    """Each chunk id's 1-based place in ``ranked``."""
    return {cid: rank for rank, (cid, _) in enumerate(ranked, 1)}
