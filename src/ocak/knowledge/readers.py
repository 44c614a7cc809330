"""A document's bytes and file name become structured text blocks.

Plain text, Markdown, HTML and PDF. Each block is one paragraph (or one fenced
code block, or one table cell) with the path of headings above it, so the
chunker can follow the document's own structure instead of cutting blindly.
Blocks come from a generator: a large file is never held as one list of blocks.

``Block.start`` is a character offset in the document's extracted text: the
decoded file (line ends made ``\\n``) for text and Markdown; for HTML and PDF,
the headings and blocks (PDF: pages) joined by blank lines.
"""

from __future__ import annotations

import codecs
import io
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import PurePosixPath

from ocak.errors import InvalidRequest

HEADING_SEPARATOR = " > "

MARKDOWN_SUFFIXES = frozenset({".md", ".markdown", ".mdown", ".mkd"})
HTML_SUFFIXES = frozenset({".html", ".htm", ".xhtml"})
PDF_SUFFIXES = frozenset({".pdf"})

_ATX = re.compile(r" {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*")
_FENCE_OPEN = re.compile(r" {0,3}(`{3,}|~{3,})")
_FENCE_CLOSE = re.compile(r" {0,3}(`{3,}|~{3,})[ \t]*")

_HTML_HEADINGS = {f"h{n}": n for n in range(1, 7)}
# Their text is never content: code, styling, menus, the page title (a heading says it).
_HTML_DROPPED = frozenset({"script", "style", "nav", "noscript", "template", "title", "svg"})
# Each of these starts or ends a block; inline tags (a, b, span, ...) do not.
_HTML_BLOCKS = frozenset(
    {
        "p", "li", "pre", "td", "th", "div", "section", "article", "main", "header",
        "footer", "aside", "blockquote", "ul", "ol", "table", "tr", "dl", "dt", "dd",
        "figure", "figcaption", "form", "body", "hr", "caption", "address", "details",
        "summary", "tbody", "thead",
    }
)  # fmt: skip
_HTML_FEED = 1 << 16


@dataclass(frozen=True, slots=True)
class Block:
    """One paragraph-like unit of a document, under its heading path."""

    heading: str  # "History > The founding"; "" before any heading
    text: str
    start: int  # character offset in the extracted text
    page: int | None = None  # 1-based, PDFs only
    code: bool = False  # preformatted: split at lines, never at sentences


def read_document(name: str, data: bytes) -> Iterator[Block]:
    """The blocks of the file ``name``; raises InvalidRequest naming it when it has no text.

    The format comes from the name's suffix (a PDF is also recognised by its
    magic bytes); anything else is read as plain text.
    """
    suffix = PurePosixPath(name).suffix.lower()
    blocks: Iterator[Block]
    if suffix in PDF_SUFFIXES or (
        data.startswith(b"%PDF-") and suffix not in MARKDOWN_SUFFIXES | HTML_SUFFIXES
    ):
        blocks = _pdf_blocks(name, data)
    else:
        text = decode_text(name, data)
        if suffix in MARKDOWN_SUFFIXES:
            blocks = _markdown_blocks(text)
        elif suffix in HTML_SUFFIXES:
            blocks = _html_blocks(text)
        else:
            blocks = _text_blocks(text)
    first = next(blocks, None)
    if first is None:
        raise InvalidRequest(f"'{name}' has no text to index (it is empty).", param="file")
    return itertools.chain((first,), blocks)


def decode_text(name: str, data: bytes) -> str:
    """UTF-8 (a BOM is dropped), else latin-1; NUL bytes mean a binary file."""
    if b"\x00" in data:
        raise InvalidRequest(
            f"'{name}' looks like a binary file (it contains NUL bytes), not text.", param="file"
        )
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _lines(text: str) -> Iterator[tuple[int, str]]:
    """Each line of ``text`` with its offset, without building a list of them."""
    pos, size = 0, len(text)
    while pos < size:
        end = text.find("\n", pos)
        if end < 0:
            end = size
        yield pos, text[pos:end]
        pos = end + 1


def _block(
    text: str, start: int, end: int, heading: str, page: int | None = None, code: bool = False
) -> Block | None:
    """The stripped slice ``text[start:end]`` as a block, its offset moved past the strip."""
    raw = text[start:end]
    body = raw.strip()
    if not body:
        return None
    lead = len(raw) - len(raw.lstrip())
    return Block(heading, body, start + lead, page, code)


def _paragraphs(text: str, base: int = 0, page: int | None = None) -> Iterator[Block]:
    """Paragraphs separated by blank lines."""
    start: int | None = None
    end = 0
    for pos, line in _lines(text):
        if line.strip():
            if start is None:
                start = pos
            end = pos + len(line)
        elif start is not None:
            block = _block(text, start, end, "", page=page)
            start = None
            if block is not None:
                yield _shift(block, base)
    if start is not None:
        block = _block(text, start, end, "", page=page)
        if block is not None:
            yield _shift(block, base)


def _shift(block: Block, base: int) -> Block:
    if not base:
        return block
    return Block(block.heading, block.text, block.start + base, block.page, block.code)


def _text_blocks(text: str) -> Iterator[Block]:
    return _paragraphs(text)


class _Headings:
    """The path of open headings: a heading of level n closes those of level >= n."""

    def __init__(self) -> None:
        self._open: list[tuple[int, str]] = []

    def enter(self, level: int, title: str) -> str:
        while self._open and self._open[-1][0] >= level:
            self._open.pop()
        if title:
            self._open.append((level, title))
        return self.path

    @property
    def path(self) -> str:
        return HEADING_SEPARATOR.join(title for _, title in self._open)


def _markdown_blocks(text: str) -> Iterator[Block]:
    """ATX headings open sections, blank lines end paragraphs, fenced code stays whole."""
    headings = _Headings()
    heading = ""
    para: int | None = None
    para_end = 0
    fence: tuple[str, int, int] | None = None  # fence char, its length, where it opened
    for pos, line in _lines(text):
        if fence is not None:
            close = _FENCE_CLOSE.fullmatch(line)
            if close and close.group(1)[0] == fence[0] and len(close.group(1)) >= fence[1]:
                block = _block(text, fence[2], pos + len(line), heading, code=True)
                fence = None
                if block is not None:
                    yield block
            continue
        opened = _FENCE_OPEN.match(line)
        atx = None if opened else _ATX.fullmatch(line)
        if opened or atx or not line.strip():
            if para is not None:
                block = _block(text, para, para_end, heading)
                para = None
                if block is not None:
                    yield block
            if opened:
                fence = (opened.group(1)[0], len(opened.group(1)), pos)
            elif atx:
                heading = headings.enter(len(atx.group(1)), (atx.group(2) or "").strip())
            continue
        if para is None:
            para = pos
        para_end = pos + len(line)
    if fence is not None:  # an unclosed fence runs to the end of the file
        block = _block(text, fence[2], len(text), heading, code=True)
        if block is not None:
            yield block
    elif para is not None:
        block = _block(text, para, para_end, heading)
        if block is not None:
            yield block


class _HtmlBlocks(HTMLParser):
    """Collects blocks as the parser is fed; ``take()`` hands over those finished so far."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._headings = _Headings()
        self._heading = ""
        self._skip = 0
        self._pre = 0
        self._title: list[str] | None = None
        self._level = 0
        self._buf: list[str] = []
        self._pos = 0
        self._done: list[Block] = []

    def take(self) -> list[Block]:
        done, self._done = self._done, []
        return done

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HTML_DROPPED:
            self._skip += 1
        elif self._skip:
            return
        elif tag in _HTML_HEADINGS:
            self._flush()
            self._title, self._level = [], _HTML_HEADINGS[tag]
        elif tag in _HTML_BLOCKS:
            self._flush()
            if tag == "pre":
                self._pre += 1
        elif tag == "br":
            self._data("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HTML_DROPPED:
            self._skip = max(0, self._skip - 1)
        elif self._skip:
            return
        elif tag in _HTML_HEADINGS and self._title is not None:
            title = " ".join("".join(self._title).split())
            self._title = None
            self._heading = self._headings.enter(self._level, title)
            if title:
                self._pos += len(title) + 2
        elif tag in _HTML_BLOCKS:
            self._flush()
            if tag == "pre":
                self._pre = max(0, self._pre - 1)

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self._data(data)

    def _data(self, data: str) -> None:
        (self._title if self._title is not None else self._buf).append(data)

    def _flush(self) -> None:
        raw = "".join(self._buf)
        self._buf = []
        code = self._pre > 0
        text = raw.strip("\n").rstrip() if code else " ".join(raw.split())
        if text.strip():
            self._done.append(Block(self._heading, text, self._pos, None, code))
            self._pos += len(text) + 2

    def close(self) -> None:
        super().close()
        self._flush()


def _html_blocks(text: str) -> Iterator[Block]:
    """h1-h6 are headings; p, li, pre, td (and other block tags) are blocks."""
    parser = _HtmlBlocks()
    for at in range(0, len(text), _HTML_FEED):
        parser.feed(text[at : at + _HTML_FEED])
        yield from parser.take()
    parser.close()
    yield from parser.take()


def _pdf_blocks(name: str, data: bytes) -> Iterator[Block]:
    """Page by page (pypdf); each page's paragraphs carry its 1-based number."""
    from pypdf import PdfReader  # imported here: only PDFs pay for it

    def unreadable(exc: BaseException) -> InvalidRequest:
        return InvalidRequest(f"'{name}' is not a readable PDF: {exc}", param="file")

    # pypdf raises many kinds of exception on a malformed file (its own, ValueError,
    # KeyError, struct.error, ...): any of them means this file cannot be read.
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise InvalidRequest(f"'{name}' is an encrypted PDF.", param="file")
        count = len(reader.pages)
    except InvalidRequest:
        raise
    except Exception as exc:
        raise unreadable(exc) from exc
    offset = 0
    for index in range(count):
        try:
            page_text = reader.pages[index].extract_text() or ""
        except Exception as exc:
            raise unreadable(exc) from exc
        page_text = page_text.replace("\r\n", "\n").replace("\r", "\n")
        yield from _paragraphs(page_text, base=offset, page=index + 1)
        offset += len(page_text) + 2
