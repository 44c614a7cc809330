"""Knowledge bases in one SQLite file: documents, their chunks and vectors, and search.

WAL mode, like ``ocak.db`` (``ocak.store.db``): readers never wait for a writer.
Chunk text is also indexed by FTS5 (porter stemming over unicode61), kept in step
with ``chunks`` by triggers. Vector search is brute force in numpy over one float32
matrix per knowledge base, loaded on first search and reloaded when the base's
``generation`` (bumped by every change, in this process or another) moves on.

An import embeds before it writes: the chunks and vectors of one document are
computed first (no lock held, so searches go on meanwhile) and then written in
one transaction, so an error or an interrupt midway leaves the base as it was.
"""

from __future__ import annotations

import builtins
import hashlib
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt

from ocak.errors import InvalidRequest, NotFound, OcakError
from ocak.knowledge.chunking import DEFAULT_MAX_CHARS, DEFAULT_OVERLAP, chunk_blocks
from ocak.knowledge.db import KnowledgeDb
from ocak.knowledge.db import KnowledgeStoreError as KnowledgeStoreError
from ocak.knowledge.embedding import (
    EMBED_BATCH,
    EmbeddedChunk,
    Embedder,
    Vectors,
    embed_chunks,
    normalised,
)
from ocak.knowledge.embedding import EmbeddingMismatch as EmbeddingMismatch
from ocak.knowledge.ranking import Ranked, fts_query, fuse, ranks, vector_top
from ocak.knowledge.readers import read_document

SearchMode = Literal["hybrid", "vector", "keyword"]
AddStatus = Literal["added", "replaced", "unchanged"]

CANDIDATES = 50  # each ranked list fused in a hybrid search is this deep (or k, if larger)
MAX_K = 1000
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

_KB_COLUMNS = """k.name, k.model, k.dimensions, k.created_at,
    (SELECT COUNT(*) FROM documents d WHERE d.kb_id = k.id),
    (SELECT COUNT(*) FROM chunks c JOIN documents d ON d.id = c.document_id
        WHERE d.kb_id = k.id),
    (SELECT COALESCE(SUM(d.size), 0) FROM documents d WHERE d.kb_id = k.id)"""


class KnowledgeBaseExists(OcakError):
    status = 409
    type = "invalid_request_error"
    code = "kb_exists"


class KnowledgeBaseNotFound(NotFound):
    code = "kb_not_found"

    def __init__(self, name: str) -> None:
        super().__init__(f"The knowledge base '{name}' does not exist.", param="name")
        self.name = name


@dataclass(frozen=True, slots=True)
class KbInfo:
    name: str
    model: str  # the embedding model its vectors came from: queries must use it too
    dimensions: int
    created_at: float
    documents: int
    chunks: int
    bytes: int  # the documents' sizes as imported


@dataclass(frozen=True, slots=True)
class DocInfo:
    source: str
    sha256: str
    size: int
    chunks: int
    added_at: float


@dataclass(frozen=True, slots=True)
class AddProgress:
    """Reported after each embedded batch: chunks so far, of which newly embedded."""

    source: str
    chunks: int
    embedded: int


@dataclass(frozen=True, slots=True)
class AddResult:
    status: AddStatus
    chunks: int
    embedded: int = 0  # chunks sent to the embedder; the others reused an earlier vector
    reused: int = 0


@dataclass(frozen=True, slots=True)
class Hit:
    chunk_id: int
    text: str
    heading: str
    source: str
    start: int
    end: int
    page: int | None
    score: float  # cosine (vector), -bm25 (keyword) or the fused RRF score (hybrid)
    vector_rank: int | None  # 1-based place in each ranked list; None when absent from it
    keyword_rank: int | None


@dataclass(frozen=True, slots=True)
class _Kb:
    id: int
    name: str
    dimensions: int
    generation: int


@dataclass(frozen=True, slots=True)
class _Matrix:
    generation: int
    ids: npt.NDArray[np.int64]
    vectors: Vectors


class KnowledgeStore:
    """All knowledge bases of one SQLite file; usable from several threads."""

    def __init__(
        self,
        path: Path,
        *,
        max_chars: int = DEFAULT_MAX_CHARS,
        overlap: int = DEFAULT_OVERLAP,
        batch: int = EMBED_BATCH,
    ) -> None:
        self.path = path
        self.max_chars, self.overlap, self.batch = max_chars, overlap, batch
        self._db = KnowledgeDb(path)
        self._read, self._write = self._db.read, self._db.write
        self._matrices: dict[int, _Matrix] = {}

    def close(self) -> None:
        """Checkpoint the WAL into the main file and close."""
        self._db.close()
        self._matrices.clear()

    def __enter__(self) -> KnowledgeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def create(self, name: str, model: str, dimensions: int) -> KbInfo:
        """A new, empty knowledge base whose vectors come from ``model``."""
        if not _NAME.fullmatch(name):
            raise InvalidRequest(
                f"Invalid knowledge base name '{name}': use 1-64 letters, digits, '.', '_' "
                "or '-', starting with a letter or digit.",
                param="name",
            )
        if not model:
            raise InvalidRequest("A knowledge base needs an embedding model.", param="model")
        if not 1 <= dimensions <= 65536:
            raise InvalidRequest(f"Invalid dimensions {dimensions}.", param="dimensions")
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM kbs WHERE name = ?", (name,)).fetchone():
                raise KnowledgeBaseExists(
                    f"The knowledge base '{name}' already exists.", param="name"
                )
            conn.execute(
                "INSERT INTO kbs (name, model, dimensions, created_at) VALUES (?, ?, ?, ?)",
                (name, model, dimensions, time.time()),
            )
        return self.info(name)

    def list(self) -> builtins.list[KbInfo]:
        """Every knowledge base, by name, with its counts."""
        rows = self._read(f"SELECT {_KB_COLUMNS} FROM kbs k ORDER BY k.name")
        return [KbInfo(*row) for row in rows]

    def info(self, name: str) -> KbInfo:
        rows = self._read(f"SELECT {_KB_COLUMNS} FROM kbs k WHERE k.name = ?", (name,))
        if not rows:
            raise KnowledgeBaseNotFound(name)
        return KbInfo(*rows[0])

    def remove(self, name: str) -> None:
        """Delete a knowledge base with all its documents, chunks and index rows."""
        with self._write() as conn:
            row = conn.execute("SELECT id FROM kbs WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise KnowledgeBaseNotFound(name)
            conn.execute("DELETE FROM kbs WHERE id = ?", (row[0],))
            self._matrices.pop(row[0], None)

    def documents(self, name: str) -> builtins.list[DocInfo]:
        kb = self._kb(name)
        rows = self._read(
            """SELECT d.source, d.sha256, d.size,
                (SELECT COUNT(*) FROM chunks c WHERE c.document_id = d.id), d.added_at
            FROM documents d WHERE d.kb_id = ? ORDER BY d.source""",
            (kb.id,),
        )
        return [DocInfo(*row) for row in rows]

    def remove_document(self, name: str, source: str) -> bool:
        """Delete one document and its chunks; False when the base has no such document."""
        kb = self._kb(name)
        with self._write() as conn:
            cur = conn.execute(
                "DELETE FROM documents WHERE kb_id = ? AND source = ?", (kb.id, source)
            )
            if cur.rowcount:
                _bump(conn, kb.id)
            return cur.rowcount > 0

    def add(
        self,
        name: str,
        source: str,
        data: bytes,
        embed: Embedder,
        progress: Callable[[AddProgress], None] | None = None,
    ) -> AddResult:
        """Import (or re-import) the file ``source``: read, chunk, embed, store.

        The same bytes again are "unchanged" and embed nothing; other bytes replace
        the document, embedding only chunks whose text is new (the others keep their
        vector). Nothing is written unless the whole document was embedded.
        """
        if not source or len(source) > 1024:
            raise InvalidRequest("A document needs a name of 1-1024 characters.", param="file")
        kb = self._kb(name)
        digest = hashlib.sha256(data).hexdigest()
        rows = self._read(
            "SELECT id, sha256 FROM documents WHERE kb_id = ? AND source = ?", (kb.id, source)
        )
        known: dict[str, bytes] = {}
        if rows:
            old_id, old_digest = rows[0]
            if old_digest == digest:
                (count,) = self._read(
                    "SELECT COUNT(*) FROM chunks WHERE document_id = ?", (old_id,)
                )[0]
                return AddResult("unchanged", count, 0, count)
            pairs = self._read(
                "SELECT text_sha256, vector FROM chunks WHERE document_id = ?", (old_id,)
            )
            known = dict(pairs)
        before = len(known)
        chunks = chunk_blocks(read_document(source, data), self.max_chars, self.overlap)
        report = _reporter(source, progress)
        done = list(
            embed_chunks(chunks, embed, kb.dimensions, known, batch=self.batch, progress=report)
        )
        embedded = len(known) - before  # every vector embedded here was added to ``known``
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM kbs WHERE id = ?", (kb.id,)).fetchone() is None:
                raise KnowledgeBaseNotFound(name)  # removed while this document was embedded
            replaced = conn.execute(
                "DELETE FROM documents WHERE kb_id = ? AND source = ?", (kb.id, source)
            ).rowcount
            doc_id = conn.execute(
                "INSERT INTO documents (kb_id, source, sha256, size, added_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (kb.id, source, digest, len(data), time.time()),
            ).lastrowid
            conn.executemany(
                "INSERT INTO chunks (document_id, ordinal, heading, text, text_sha256,"
                " char_start, char_end, page, vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (_chunk_row(doc_id, ordinal, e) for ordinal, e in enumerate(done)),
            )
            _bump(conn, kb.id)
        status: AddStatus = "replaced" if replaced else "added"
        return AddResult(status, len(done), embedded, len(done) - embedded)

    def search(
        self,
        name: str,
        query: str,
        query_vector: npt.ArrayLike | None = None,
        k: int = 5,
        mode: SearchMode = "hybrid",
    ) -> builtins.list[Hit]:
        """The ``k`` chunks best matching ``query``, best first.

        ``query_vector`` (the query embedded by the base's model) is needed unless
        ``mode`` is "keyword". Hybrid fuses the vector and keyword rankings (RRF).
        """
        if not query.strip():
            raise InvalidRequest("The search query is empty.", param="query")
        if mode not in get_args(SearchMode):
            raise InvalidRequest(f"Unknown search mode '{mode}'.", param="mode")
        if not 1 <= k <= MAX_K:
            raise InvalidRequest(f"k must be between 1 and {MAX_K}.", param="k")
        kb = self._kb(name)
        depth = max(CANDIDATES, k)
        by_vector: Ranked = []
        by_keyword: Ranked = []
        if mode != "keyword":
            if query_vector is None:
                raise InvalidRequest("A vector search needs the query's vector.", param="query")
            by_vector = self._vector_ranked(kb, query_vector, depth)
        if mode != "vector":
            by_keyword = self._keyword_ranked(kb, query, depth)
        if mode == "hybrid":
            ranked = fuse((by_vector, by_keyword))
        else:
            ranked = by_vector if mode == "vector" else by_keyword
        return self._hits(ranked[:k], ranks(by_vector), ranks(by_keyword))

    # -- internals --

    def _kb(self, name: str) -> _Kb:
        rows = self._read(
            "SELECT id, name, dimensions, generation FROM kbs WHERE name = ?", (name,)
        )
        if not rows:
            raise KnowledgeBaseNotFound(name)
        return _Kb(*rows[0])

    def _vector_ranked(self, kb: _Kb, query_vector: npt.ArrayLike, depth: int) -> Ranked:
        query = normalised(np.asarray(query_vector).reshape(1, -1), 1, kb.dimensions)[0]
        matrix = self._matrix(kb)
        return vector_top(matrix.ids, matrix.vectors, query, depth)

    def _matrix(self, kb: _Kb) -> _Matrix:
        """The base's vectors, cached while its generation stays ``kb.generation``."""
        cached = self._matrices.get(kb.id)
        if cached is not None and cached.generation == kb.generation:
            return cached
        rows = self._read(
            "SELECT c.id, c.vector FROM chunks c JOIN documents d ON d.id = c.document_id"
            " WHERE d.kb_id = ? ORDER BY c.id",
            (kb.id,),
        )
        ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        flat = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32)
        matrix = _Matrix(kb.generation, ids, flat.reshape(len(rows), kb.dimensions))
        self._matrices[kb.id] = matrix  # two threads loading at once store equal matrices
        return matrix

    def _keyword_ranked(self, kb: _Kb, query: str, depth: int) -> Ranked:
        match = fts_query(query)
        if match is None:
            return []
        rows = self._read(
            """SELECT chunks_fts.rowid, bm25(chunks_fts) AS score FROM chunks_fts
            JOIN chunks c ON c.id = chunks_fts.rowid
            JOIN documents d ON d.id = c.document_id
            WHERE chunks_fts MATCH ? AND d.kb_id = ?
            ORDER BY score, chunks_fts.rowid LIMIT ?""",
            (match, kb.id, depth),
        )
        return [(int(cid), -float(score)) for cid, score in rows]

    def _hits(
        self,
        ranked: Ranked,
        vector_rank: dict[int, int],
        keyword_rank: dict[int, int],
    ) -> builtins.list[Hit]:
        if not ranked:
            return []
        marks = ",".join("?" * len(ranked))
        rows = self._read(
            "SELECT c.id, c.text, c.heading, d.source, c.char_start, c.char_end, c.page"
            f" FROM chunks c JOIN documents d ON d.id = c.document_id WHERE c.id IN ({marks})",
            [cid for cid, _ in ranked],
        )
        found = {row[0]: row for row in rows}
        hits = []
        for cid, score in ranked:
            if cid not in found:
                continue  # a chunk deleted since its vectors were loaded
            _, text, heading, source, start, end, page = found[cid]
            ranks_ = vector_rank.get(cid), keyword_rank.get(cid)
            hits.append(Hit(cid, text, heading, source, start, end, page, score, *ranks_))
        return hits


def _chunk_row(document_id: int | None, ordinal: int, e: EmbeddedChunk) -> tuple[Any, ...]:
    c = e.chunk
    return (document_id, ordinal, c.heading, c.text, e.key, c.start, c.end, c.page, e.vector)


def _reporter(
    source: str, progress: Callable[[AddProgress], None] | None
) -> Callable[[int, int], None] | None:
    if progress is None:
        return None
    return lambda done, embedded: progress(AddProgress(source, done, embedded))


def _bump(conn: sqlite3.Connection, kb_id: int) -> None:
    """Mark the base changed: every process's cached vector matrix of it is now stale."""
    conn.execute("UPDATE kbs SET generation = generation + 1 WHERE id = ?", (kb_id,))
