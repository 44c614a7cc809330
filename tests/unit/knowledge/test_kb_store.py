"""The knowledge store: bases, imports (unchanged, partial re-embed, atomic), search modes."""

from __future__ import annotations

import hashlib
import re
import sqlite3
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from ocak.errors import InvalidRequest
from ocak.knowledge.store import (
    AddProgress,
    EmbeddingMismatch,
    KnowledgeBaseExists,
    KnowledgeBaseNotFound,
    KnowledgeStore,
    KnowledgeStoreError,
)

DIMS = 64


def bag_of_words(texts: list[str]) -> npt.NDArray[np.float32]:
    """A deterministic stand-in for a model: words hashed into 64 buckets, normalised."""
    out = np.zeros((len(texts), DIMS), dtype=np.float32)
    for row, text in enumerate(texts):
        for word in re.findall(r"\w+", text.lower()):
            out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % DIMS] += 1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return (out / np.where(norms > 0, norms, 1)).astype(np.float32)


class CountingEmbedder:
    """Counts calls and texts; raises ``fail`` on call number ``fail_on`` (1-based)."""

    def __init__(self, fail_on: int | None = None, fail: BaseException | None = None) -> None:
        self.calls = 0
        self.texts: list[str] = []
        self.fail_on, self.fail = fail_on, fail

    def __call__(self, texts: list[str]) -> npt.NDArray[np.float32]:
        self.calls += 1
        if self.calls == self.fail_on and self.fail is not None:
            raise self.fail
        self.texts.extend(texts)
        return bag_of_words(texts)


def query(text: str) -> npt.NDArray[np.float32]:
    vector: npt.NDArray[np.float32] = bag_of_words([text])[0]
    return vector


GUIDE = """\
# Animals

## Zebra

The zebra has black and white stripes and lives on the savanna.

## Penguin

The penguin swims in cold water and cannot fly.

## Octopus

The octopus has eight arms and changes colour with chromatophores.

# Plants

## Cactus

A cactus stores water in its thick stem in the desert.
"""


@pytest.fixture
def store(tmp_path: Path) -> KnowledgeStore:
    kb = KnowledgeStore(tmp_path / "knowledge.db", batch=2)
    kb.create("docs", "fake-bow", DIMS)
    return kb


def raw(store: KnowledgeStore, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(store.path) as conn:
        return conn.execute(sql).fetchall()


def test_create_list_info_remove(tmp_path: Path) -> None:
    with KnowledgeStore(tmp_path / "k.db") as kb:
        info = kb.create("team.notes-1", "bge-small", 384)
        assert (info.name, info.model, info.dimensions, info.documents, info.chunks) == (
            "team.notes-1",
            "bge-small",
            384,
            0,
            0,
        )
        kb.create("alpha", "bge-small", 384)
        assert [i.name for i in kb.list()] == ["alpha", "team.notes-1"]
        with pytest.raises(KnowledgeBaseExists) as exists:
            kb.create("alpha", "other", 8)
        assert (exists.value.status, exists.value.code) == (409, "kb_exists")
        kb.remove("alpha")
        with pytest.raises(KnowledgeBaseNotFound) as missing:
            kb.info("alpha")
        assert (missing.value.status, missing.value.code) == (404, "kb_not_found")
        with pytest.raises(KnowledgeBaseNotFound):
            kb.remove("alpha")


@pytest.mark.parametrize("name", ["", "-x", ".hidden", "a b", "a/b", "x" * 65, "ü", "a\n"])
def test_bad_names_are_refused(store: KnowledgeStore, name: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        store.create(name, "m", 4)
    assert info.value.param == "name"


def test_add_then_counts_and_documents(store: KnowledgeStore) -> None:
    seen: list[AddProgress] = []
    result = store.add("docs", "guide.md", GUIDE.encode(), CountingEmbedder(), seen.append)
    assert (result.status, result.chunks, result.embedded, result.reused) == ("added", 4, 4, 0)
    assert [p.chunks for p in seen] == [2, 4]  # one report per batch of two
    info = store.info("docs")
    assert (info.documents, info.chunks, info.bytes) == (1, 4, len(GUIDE.encode()))
    (doc,) = store.documents("docs")
    assert (doc.source, doc.size, doc.chunks) == ("guide.md", len(GUIDE.encode()), 4)
    assert doc.sha256 == hashlib.sha256(GUIDE.encode()).hexdigest()


def test_same_bytes_again_are_unchanged_and_embed_nothing(store: KnowledgeStore) -> None:
    store.add("docs", "guide.md", GUIDE.encode(), CountingEmbedder())
    again = CountingEmbedder()
    result = store.add("docs", "guide.md", GUIDE.encode(), again)
    assert (result.status, result.chunks, again.calls) == ("unchanged", 4, 0)


def test_changed_paragraph_re_embeds_only_its_chunk(store: KnowledgeStore) -> None:
    store.add("docs", "guide.md", GUIDE.encode(), CountingEmbedder())
    changed = GUIDE.replace("cannot fly", "cannot fly but dives deep")
    embedder = CountingEmbedder()
    result = store.add("docs", "guide.md", changed.encode(), embedder)
    assert (result.status, result.chunks, result.embedded, result.reused) == (
        "replaced",
        4,
        1,
        3,
    )
    assert len(embedder.texts) == 1 and "dives deep" in embedder.texts[0]
    assert store.info("docs").chunks == 4  # the old chunks are gone
    hits = store.search("docs", "dives", query("dives"), mode="keyword")
    assert [h.heading for h in hits] == ["Animals > Penguin"]


@pytest.mark.parametrize("failure", [RuntimeError("model crashed"), KeyboardInterrupt()])
def test_failure_midway_leaves_the_base_as_it_was(
    store: KnowledgeStore, failure: BaseException
) -> None:
    store.add("docs", "guide.md", GUIDE.encode(), CountingEmbedder())
    before = store.info("docs")
    broken = CountingEmbedder(fail_on=2, fail=failure)
    with pytest.raises(type(failure)):
        store.add("docs", "other.md", b"# A\n\naaa.\n\n# B\n\nbbb.\n\n# C\n\nccc.\n", broken)
    with pytest.raises(type(failure)):
        # A replacement failing after its first batch keeps the old document whole.
        store.add("docs", "guide.md", GUIDE.upper().encode(), CountingEmbedder(2, failure))
    after = store.info("docs")
    assert (after.documents, after.chunks, after.bytes) == (
        before.documents,
        before.chunks,
        before.bytes,
    )
    assert [h.heading for h in store.search("docs", "zebra", query("zebra"), mode="keyword")] == [
        "Animals > Zebra"
    ]


def test_wrong_vector_shape_is_refused_and_nothing_written(store: KnowledgeStore) -> None:
    with pytest.raises(EmbeddingMismatch):
        store.add("docs", "a.txt", b"hello", lambda texts: np.ones((len(texts), 8), np.float32))
    assert store.info("docs").documents == 0
    with pytest.raises(EmbeddingMismatch):
        store.search("docs", "hello", np.ones(8, np.float32))


def test_remove_document_removes_chunks_and_index_rows(store: KnowledgeStore) -> None:
    store.add("docs", "guide.md", GUIDE.encode(), CountingEmbedder())
    store.add("docs", "extra.txt", b"Chromatophores again.", CountingEmbedder())
    assert store.remove_document("docs", "guide.md") is True
    assert store.remove_document("docs", "guide.md") is False
    assert [d.source for d in store.documents("docs")] == ["extra.txt"]
    assert raw(store, "SELECT COUNT(*) FROM chunks") == [(1,)]
    assert raw(store, "SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH 'zebra'") == []
    hits = store.search("docs", "chromatophores", query("chromatophores"))
    assert [h.source for h in hits] == ["extra.txt"]


def test_remove_base_removes_everything(store: KnowledgeStore) -> None:
    store.add("docs", "guide.md", GUIDE.encode(), CountingEmbedder())
    store.remove("docs")
    assert raw(store, "SELECT COUNT(*) FROM documents") == [(0,)]
    assert raw(store, "SELECT COUNT(*) FROM chunks") == [(0,)]
    assert raw(store, "SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH 'zebra'") == []


def test_keyword_search_finds_a_rare_word_and_stems(store: KnowledgeStore) -> None:
    store.add("docs", "guide.md", GUIDE.encode(), CountingEmbedder())
    (hit,) = store.search("docs", "chromatophores", None, mode="keyword")
    assert (hit.heading, hit.source, hit.keyword_rank, hit.vector_rank) == (
        "Animals > Octopus",
        "guide.md",
        1,
        None,
    )
    assert GUIDE[hit.start : hit.end] == hit.text
    assert [h.heading for h in store.search("docs", "swimming", None, mode="keyword")] == [
        "Animals > Penguin"  # porter: swimming ~ swims
    ]


def test_vector_search_finds_by_the_embedding(store: KnowledgeStore) -> None:
    store.add("docs", "guide.md", GUIDE.encode(), CountingEmbedder())
    hits = store.search("docs", "q", query("black white stripes savanna"), k=2, mode="vector")
    assert hits[0].heading == "Animals > Zebra"
    assert (hits[0].vector_rank, hits[0].keyword_rank) == (1, None)
    assert hits[0].score > hits[1].score
    assert len(hits) == 2


def test_hybrid_fuses_both_rankings(store: KnowledgeStore) -> None:
    store.add("docs", "guide.md", GUIDE.encode(), CountingEmbedder())
    text = "desert stem chromatophores"
    vector = store.search("docs", text, query("cold water swims fly"), k=50, mode="vector")
    keyword = store.search("docs", text, None, k=50, mode="keyword")
    hybrid = store.search("docs", text, query("cold water swims fly"), k=50)
    ids = {h.chunk_id for h in vector} | {h.chunk_id for h in keyword}
    assert {h.chunk_id for h in hybrid} == ids  # the union
    vrank = {h.chunk_id: i for i, h in enumerate(vector, 1)}
    krank = {h.chunk_id: i for i, h in enumerate(keyword, 1)}
    for hit in hybrid:
        assert (hit.vector_rank, hit.keyword_rank) == (
            vrank.get(hit.chunk_id),
            krank.get(hit.chunk_id),
        )
        expected = sum(1 / (60 + r) for r in (hit.vector_rank, hit.keyword_rank) if r is not None)
        assert hit.score == pytest.approx(expected)
    scores = [h.score for h in hybrid]
    assert scores == sorted(scores, reverse=True)
    both = [h for h in hybrid if h.vector_rank and h.keyword_rank]
    assert both and hybrid[0] in both  # found by both lists: fused to the top
    assert len(store.search("docs", text, query(text), k=2)) == 2


@pytest.mark.parametrize(
    "text", ['"foo" OR (bar', "NEAR(a b", "*", "a:b", "'; DROP TABLE chunks; --", "^-+", "?!"]
)
def test_punctuation_in_queries_never_raises(store: KnowledgeStore, text: str) -> None:
    store.add("docs", "guide.md", GUIDE.encode(), CountingEmbedder())
    for mode in ("hybrid", "vector", "keyword"):
        store.search("docs", text, query(text), mode=mode)
    assert store.info("docs").chunks == 4


def test_bad_searches_are_refused(store: KnowledgeStore) -> None:
    for bad, param in (({"query": "  "}, "query"), ({"k": 0}, "k"), ({"mode": "fuzzy"}, "mode")):
        args: dict[str, object] = {"query": "x", "query_vector": query("x"), **bad}
        with pytest.raises(InvalidRequest) as info:
            store.search("docs", **args)  # type: ignore[arg-type]
        assert info.value.param == param
    with pytest.raises(InvalidRequest):
        store.search("docs", "x", None, mode="vector")
    with pytest.raises(KnowledgeBaseNotFound):
        store.search("nope", "x", query("x"))


def test_vectors_reload_when_the_base_changes_even_from_another_process(
    store: KnowledgeStore,
) -> None:
    store.add("docs", "guide.md", GUIDE.encode(), CountingEmbedder())
    assert store.search("docs", "q", query("volcano lava"), k=1, mode="vector")[0].source == (
        "guide.md"
    )
    with KnowledgeStore(store.path) as other:  # another process, say ``ocak kb add``
        other.add("docs", "volcano.txt", b"Volcano lava flows.", CountingEmbedder())
    hits = store.search("docs", "q", query("volcano lava"), k=1, mode="vector")
    assert hits[0].source == "volcano.txt"
    store.remove_document("docs", "volcano.txt")
    hits = store.search("docs", "q", query("volcano lava"), k=5, mode="vector")
    assert {h.source for h in hits} == {"guide.md"}


def test_repeated_text_is_embedded_once(store: KnowledgeStore) -> None:
    embedder = CountingEmbedder()
    result = store.add(
        "docs", "rep.md", b"# A\n\nsame.\n\n# B\n\nother.\n\n# A\n\nsame.\n", embedder
    )
    assert (result.chunks, result.embedded, len(embedder.texts)) == (3, 2, 2)


def test_pdf_document_keeps_pages(store: KnowledgeStore) -> None:
    from test_kb_readers import make_pdf

    data = make_pdf(["Apples grow on trees.", "Pears are sweet."])
    store.add("docs", "fruit.pdf", data, CountingEmbedder())
    (hit,) = store.search("docs", "pears", None, mode="keyword")
    assert (hit.page, hit.text) == (2, "Pears are sweet.")


def test_unreadable_file_raises_naming_it(store: KnowledgeStore) -> None:
    with pytest.raises(InvalidRequest) as info:
        store.add("docs", "bad.pdf", b"%PDF-nonsense", CountingEmbedder())
    assert "bad.pdf" in info.value.message and info.value.param == "file"
    with pytest.raises(KnowledgeBaseNotFound):
        store.add("nope", "a.txt", b"x", CountingEmbedder())


def test_five_megabyte_document(tmp_path: Path) -> None:
    paragraph = " ".join(f"Line {i} of the large file." for i in range(30)) + "\n\n"
    data = (paragraph * (5_000_000 // len(paragraph) + 1)).encode()
    calls = 0

    def cheap(texts: list[str]) -> npt.NDArray[np.float32]:
        nonlocal calls
        calls += 1
        vectors = np.zeros((len(texts), 8), np.float32)
        vectors[:, 0] = 1.0
        return vectors

    with KnowledgeStore(tmp_path / "big.db") as kb:
        kb.create("big", "cheap", 8)
        result = kb.add("big", "big.txt", data, cheap)
        assert len(data) // 1000 < result.chunks < len(data) // 500
        assert calls <= 2  # the paragraphs repeat: their texts are embedded once each
        assert kb.info("big").chunks == result.chunks
        assert len(kb.search("big", "large", np.eye(8, dtype=np.float32)[0], k=3)) == 3


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.db"
    KnowledgeStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(KnowledgeStoreError):
        KnowledgeStore(path)
