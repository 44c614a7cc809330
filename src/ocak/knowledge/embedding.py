"""Chunks become vectors through an injected embedder, in batches, reusing known vectors.

A chunk's vector is keyed by the SHA-256 of what was embedded (its heading path and
text): a re-imported document sends only its new or changed chunks to the model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

import numpy as np
import numpy.typing as npt

from ocak.errors import OcakError
from ocak.knowledge.chunking import Chunk

Vectors = npt.NDArray[np.float32]
# texts -> an array of shape (len(texts), dimensions), float32, rows L2-normalised
Embedder = Callable[[list[str]], npt.ArrayLike]

EMBED_BATCH = 32


class EmbeddingMismatch(OcakError):
    """The embedder's vectors do not fit the knowledge base (another model, a broken one)."""

    code = "embedding_mismatch"


@dataclass(frozen=True, slots=True)
class EmbeddedChunk:
    chunk: Chunk
    key: str  # SHA-256 of the embedded text
    vector: bytes  # float32, unit length


def embed_input(chunk: Chunk) -> str:
    """What is embedded: the heading path, then the text (the heading says what it is about)."""
    return f"{chunk.heading}\n\n{chunk.text}" if chunk.heading else chunk.text


def embed_chunks(
    chunks: Iterable[Chunk],
    embed: Embedder,
    dimensions: int,
    known: dict[str, bytes],
    *,
    batch: int = EMBED_BATCH,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[EmbeddedChunk]:
    """Each chunk with its vector: from ``known`` when its key is there, else embedded.

    ``known`` gains every vector embedded here, so a text repeated in the document is
    embedded once. ``progress(chunks, embedded)`` is called after each batch.
    """
    it = iter(chunks)
    done = embedded = 0
    while group := list(islice(it, batch)):
        inputs = [embed_input(chunk) for chunk in group]
        keys = [hashlib.sha256(text.encode()).hexdigest() for text in inputs]
        wanted = {key: text for key, text in zip(keys, inputs, strict=True) if key not in known}
        if wanted:
            vectors = normalised(embed(list(wanted.values())), len(wanted), dimensions)
            known.update(zip(wanted, (row.tobytes() for row in vectors), strict=True))
            embedded += len(wanted)
        for chunk, key in zip(group, keys, strict=True):
            yield EmbeddedChunk(chunk, key, known[key])
        done += len(group)
        if progress is not None:
            progress(done, embedded)


def normalised(vectors: npt.ArrayLike, count: int, dimensions: int) -> Vectors:
    """``vectors`` as float32 rows of unit length, checked to be ``(count, dimensions)``."""
    array = np.asarray(vectors, dtype=np.float32)
    if array.shape != (count, dimensions):
        raise EmbeddingMismatch(
            f"The embedder gave vectors of shape {array.shape} for {count} texts; this "
            f"knowledge base holds {dimensions}-dimensional vectors (was it built with "
            "another model?)."
        )
    if not np.isfinite(array).all():
        raise EmbeddingMismatch("The embedder gave vectors that are not finite numbers.")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return np.ascontiguousarray(array / np.where(norms > 0, norms, 1), dtype=np.float32)
