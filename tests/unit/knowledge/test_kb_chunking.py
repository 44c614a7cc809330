"""Chunking: along headings and paragraphs, long paragraphs split at sentences, overlap bounded."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from ocak.knowledge.chunking import Chunk, chunk_blocks
from ocak.knowledge.readers import Block, read_document


def chunks_of(markdown: str, max_chars: int = 200, overlap: int = 40) -> list[Chunk]:
    return list(chunk_blocks(read_document("doc.md", markdown.encode()), max_chars, overlap))


def sentences(n: int, word: str = "alpha") -> str:
    return " ".join(f"Sentence {i} says {word} things." for i in range(n))


def test_never_merges_across_a_heading_change() -> None:
    chunks = chunks_of("# A\n\nshort a.\n\n# B\n\nshort b.\n\n## C\n\nshort c.\n")
    assert [(c.heading, c.text) for c in chunks] == [
        ("A", "short a."),
        ("B", "short b."),
        ("B > C", "short c."),
    ]


def test_packs_whole_paragraphs_while_they_fit() -> None:
    paragraphs = [f"Paragraph {i} is short." for i in range(12)]  # 22 chars each
    chunks = chunks_of("# S\n\n" + "\n\n".join(paragraphs), max_chars=100, overlap=0)
    assert all(len(c.text) <= 100 for c in chunks)
    joined = [p for c in chunks for p in c.text.split("\n\n")]
    assert joined == paragraphs  # whole paragraphs, in order, none cut
    assert [len(c.text.split("\n\n")) for c in chunks] == [4, 4, 4]


def test_long_paragraph_splits_at_sentences_with_bounded_overlap() -> None:
    text = "# Long\n\n" + sentences(40)
    chunks = chunks_of(text, max_chars=200, overlap=40)
    assert len(chunks) > 5
    for chunk in chunks:
        assert len(chunk.text) <= 200
        assert chunk.text.endswith(".")  # cut at a sentence end
        assert text[chunk.start : chunk.end] == chunk.text  # offsets point at the text
    for before, after in itertools.pairwise(chunks):
        shared = before.end - after.start
        assert 0 < shared <= 40  # overlap present and bounded
        assert before.text.endswith(text[after.start : before.end])
        assert after.text.startswith(text[after.start : before.end])
    covered = "".join(text[c.start : c.end] for c in chunks)
    assert all(f"Sentence {i} " in covered for i in range(40))


def test_no_overlap_across_a_heading_change() -> None:
    chunks = chunks_of("# A\n\n" + sentences(20) + "\n\n# B\n\nbee.\n", 200, 40)
    assert chunks[-1] == Chunk("B", "bee.", chunks[-1].start, chunks[-1].end)


def test_sentence_longer_than_a_chunk_splits_at_words_then_characters() -> None:
    words = " ".join(f"word{i}" for i in range(200))  # no sentence end at all
    giant = "x" * 450
    chunks = chunks_of(f"# W\n\n{words}\n\n{giant}\n", max_chars=100, overlap=20)
    assert all(len(c.text) <= 100 for c in chunks)
    for chunk in chunks:  # whole words, and the one giant word cut every 80 characters
        for w in chunk.text.split():
            assert (w.startswith("word") and w[4:].isdigit()) or set(w) == {"x"}
    assert [len(c.text) for c in chunks if "word" not in c.text] == [80, 80, 80, 80, 50]


def test_code_block_splits_at_lines() -> None:
    code = "```\n" + "\n".join(f"line_{i} = {i}" for i in range(60)) + "\n```"
    chunks = chunks_of(f"# Code\n\n{code}\n", max_chars=150, overlap=0)
    assert len(chunks) > 1
    for chunk in chunks:
        assert len(chunk.text) <= 150
        for line in chunk.text.splitlines():
            assert line.startswith(("line_", "```"))
            assert line == "```" or line.split(" = ")[0] == f"line_{line.split(' = ')[1]}"


def test_pdf_pages_are_never_merged() -> None:
    blocks = [Block("", "page one.", 0, page=1), Block("", "page two.", 11, page=2)]
    assert [(c.page, c.text) for c in chunk_blocks(blocks)] == [
        (1, "page one."),
        (2, "page two."),
    ]


def test_streams_without_reading_all_blocks() -> None:
    def endless() -> Iterator[Block]:
        for i in itertools.count():
            yield Block("S", f"Paragraph number {i} of an endless file.", i * 50)

    first = list(itertools.islice(chunk_blocks(endless(), 300, 50), 20))
    assert len(first) == 20 and all(len(c.text) <= 300 for c in first)


def test_five_megabyte_text_chunks() -> None:
    paragraph = sentences(8, "beta") + "\n\n"
    data = (paragraph * (5_000_000 // len(paragraph) + 1)).encode()
    count = 0
    longest = 0
    for chunk in chunk_blocks(read_document("big.txt", data)):
        count += 1
        longest = max(longest, len(chunk.text))
    assert longest <= 1000
    assert len(data) // 1000 < count < len(data) // 500


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        list(chunk_blocks([], max_chars=100, overlap=80))
