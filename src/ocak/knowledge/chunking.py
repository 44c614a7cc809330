"""Blocks become chunks of at most ``max_chars`` along the document's own structure.

A chunk never spans a heading change (nor, in a PDF, a page change): a retrieved
chunk then speaks of one section, and its heading path says which. Whole
paragraphs are packed while they fit; a paragraph longer than a chunk is split
at sentence ends, a sentence longer than that at spaces (code at line ends), and
only a word longer than that mid-word. Each chunk after the first of a section
starts with the end of the one before (at most ``overlap`` characters, from a
sentence or word start), so a fact cut at a boundary is still whole in one.

Everything streams: blocks in, chunks out, only the chunk being filled in memory.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import pairwise
from typing import NamedTuple

from ocak.knowledge.readers import Block

DEFAULT_MAX_CHARS = 1000
DEFAULT_OVERLAP = 150

_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s)|[。！？]+")
_LINE_END = re.compile(r"\n")
_WORD_END = re.compile(r"\s+")
_PROSE_LEVELS = (_SENTENCE_END, _WORD_END)
_CODE_LEVELS = (_LINE_END, _WORD_END)
_PARAGRAPH_GLUE = "\n\n"


@dataclass(frozen=True, slots=True)
class Chunk:
    """One unit of retrieval: text under one heading path, with where it came from."""

    heading: str
    text: str
    start: int  # character offsets in the extracted text (see ocak.knowledge.readers)
    end: int
    page: int | None = None


class _Piece(NamedTuple):
    text: str
    start: int
    end: int
    block: int  # which block it came from: pieces of one block join with ``glue``
    glue: str


def chunk_blocks(
    blocks: Iterable[Block],
    max_chars: int = DEFAULT_MAX_CHARS,
    overlap: int = DEFAULT_OVERLAP,
) -> Iterator[Chunk]:
    """The chunks of ``blocks``, in document order."""
    if max_chars < 20 or not 0 <= overlap <= max_chars // 2:
        raise ValueError(
            f"need max_chars >= 20 and 0 <= overlap <= max_chars / 2, not {max_chars}, {overlap}"
        )
    section: tuple[str, int | None] | None = None
    current: list[_Piece] = []
    size = 0  # len of the current chunk's text
    fresh = 0  # pieces in ``current`` that are not overlap from the chunk before
    for number, block in enumerate(blocks):
        key = (block.heading, block.page)
        if key != section:
            if fresh and section is not None:
                yield _chunk(current, *section)
            section, current, size, fresh = key, [], 0, 0
        for piece in _pieces(block, number, max_chars, overlap):
            if current and _grown(size, current[-1], piece) > max_chars:
                if fresh:
                    yield _chunk(current, *key)
                room = max_chars - len(piece.text) - len(_PARAGRAPH_GLUE)
                current = _tail(current, min(overlap, room))
                size, fresh = _size(current), 0
            size = _grown(size, current[-1], piece) if current else len(piece.text)
            current.append(piece)
            fresh += 1
    if fresh and section is not None:
        yield _chunk(current, *section)


def _grown(size: int, last: _Piece, piece: _Piece) -> int:
    return size + len(_glue(last, piece)) + len(piece.text)


def _glue(before: _Piece, after: _Piece) -> str:
    return after.glue if before.block == after.block else _PARAGRAPH_GLUE


def _size(pieces: list[_Piece]) -> int:
    if not pieces:
        return 0
    return sum(len(p.text) for p in pieces) + sum(len(_glue(a, b)) for a, b in pairwise(pieces))


def _chunk(pieces: list[_Piece], heading: str, page: int | None) -> Chunk:
    parts = [pieces[0].text]
    for before, after in pairwise(pieces):
        parts.append(_glue(before, after))
        parts.append(after.text)
    return Chunk(heading, "".join(parts), pieces[0].start, pieces[-1].end, page)


def _tail(pieces: list[_Piece], limit: int) -> list[_Piece]:
    """The last ``limit`` characters (or fewer) of a chunk, as pieces, from a clean start."""
    if limit <= 0:
        return []
    kept: list[_Piece] = []
    used = 0
    for piece in reversed(pieces):
        glue = len(_glue(piece, kept[0])) if kept else 0
        if used + glue + len(piece.text) <= limit:
            kept.insert(0, piece)
            used += glue + len(piece.text)
            continue
        cut = _clean_start(piece.text, len(piece.text) - (limit - used - glue))
        if cut is not None:
            kept.insert(0, piece._replace(text=piece.text[cut:], start=piece.start + cut))
        break
    return kept


def _clean_start(text: str, earliest: int) -> int | None:
    """A sentence start at or after ``earliest`` keeping at least half the overlap, else the
    first word start there; None if neither (one long word: no overlap beats half a word)."""
    wanted = len(text) - earliest
    if wanted <= 0:
        return None
    for pattern, keep in ((_SENTENCE_END, wanted // 2), (_WORD_END, 1)):
        found = pattern.search(text, max(0, earliest - 1))
        while found is not None and found.end() < earliest:
            found = pattern.search(text, found.end())
        if found is None:
            continue
        start = found.end()
        while start < len(text) and text[start].isspace():
            start += 1
        if len(text) - start >= keep:
            return start
    return None


def _pieces(block: Block, number: int, max_chars: int, overlap: int) -> Iterator[_Piece]:
    """The block whole when it fits a chunk, else split so each piece leaves room for overlap."""
    glue = "\n" if block.code else " "
    text = block.text
    if len(text) <= max_chars:
        yield _Piece(text, block.start, block.start + len(text), number, glue)
        return
    levels = _CODE_LEVELS if block.code else _PROSE_LEVELS
    for a, b in _spans(text, 0, len(text), levels, max_chars - overlap):
        yield _Piece(text[a:b], block.start + a, block.start + b, number, glue)


def _spans(
    text: str, a: int, b: int, levels: tuple[re.Pattern[str], ...], limit: int
) -> Iterator[tuple[int, int]]:
    """Spans of ``text[a:b]`` of at most ``limit``: whole units of the first level packed,
    a unit too long split by the next level, and past the last level cut every ``limit``."""
    if b - a <= limit:
        yield a, b
        return
    if not levels:
        for at in range(a, b, limit):
            yield from _trimmed(text, at, min(at + limit, b))
        return
    run: tuple[int, int] | None = None
    for ua, ub in _units(text, a, b, levels[0]):
        if ub - ua > limit:
            if run is not None:
                yield run
                run = None
            yield from _spans(text, ua, ub, levels[1:], limit)
        elif run is not None and ub - run[0] <= limit:
            run = (run[0], ub)
        else:
            if run is not None:
                yield run
            run = (ua, ub)
    if run is not None:
        yield run


def _units(text: str, a: int, b: int, pattern: re.Pattern[str]) -> Iterator[tuple[int, int]]:
    """The units of ``text[a:b]`` that end where ``pattern`` matches, whitespace trimmed."""
    at = a
    for found in pattern.finditer(text, a, b):
        if found.end() > at:
            yield from _trimmed(text, at, found.end())
            at = found.end()
    yield from _trimmed(text, at, b)


def _trimmed(text: str, a: int, b: int) -> Iterator[tuple[int, int]]:
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    if a < b:
        yield a, b
