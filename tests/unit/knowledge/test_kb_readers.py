"""Readers: Markdown, HTML, PDF and plain text become blocks with heading paths and positions."""

from __future__ import annotations

import pytest

from ocak.errors import InvalidRequest
from ocak.knowledge.readers import Block, decode_text, read_document


def make_pdf(pages: list[str]) -> bytes:
    """A minimal valid PDF, one line of Helvetica text per page, with a correct xref table."""
    count = len(pages)
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(count))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {count} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, text in enumerate(pages):
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (5 + 2 * i)
        )
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return out


MARKDOWN = """\
Preamble before any heading.

# History

The town was founded
on a river.

## The founding

It was 1901.

```python
# not a heading
x = 1

y = 2
```

# Geography ##

Hills.
"""


def test_markdown_headings_make_paths_and_offsets() -> None:
    blocks = list(read_document("town.md", MARKDOWN.encode()))
    assert [(b.heading, b.text) for b in blocks] == [
        ("", "Preamble before any heading."),
        ("History", "The town was founded\non a river."),
        ("History > The founding", "It was 1901."),
        ("History > The founding", "```python\n# not a heading\nx = 1\n\ny = 2\n```"),
        ("Geography", "Hills."),
    ]
    for block in blocks:  # each offset points at the block's own text in the file
        assert MARKDOWN[block.start : block.start + len(block.text)] == block.text
    assert [b.code for b in blocks] == [False, False, False, True, False]


def test_markdown_unclosed_fence_runs_to_the_end() -> None:
    blocks = list(read_document("a.md", b"# A\n\n~~~\ncode\n\n# still code\n"))
    assert [b.text for b in blocks] == ["~~~\ncode\n\n# still code"]
    assert blocks[0].heading == "A"


def test_markdown_hash_without_space_is_text() -> None:
    blocks = list(read_document("a.md", b"#hashtag is text\n\n####### seven\n"))
    assert [(b.heading, b.text) for b in blocks] == [
        ("", "#hashtag is text"),
        ("", "####### seven"),
    ]


HTML = b"""<!doctype html><html><head><title>Page</title>
<style>p { color: red }</style><script>var secret = "dropme";</script></head>
<body><nav><a href="/">Menu item</a></nav>
<h1>Guide</h1><p>Hello <b>bold</b> &amp; plain
   text.</p>
<ul><li>first</li><li>second</li></ul>
<h2>Code</h2><pre>def f():
    return 1</pre>
<table><tr><td>cell one</td><td>cell two</td></tr></table>
<script>alert("x")</script><p>After script.</p>
</body></html>"""


def test_html_blocks_headings_and_dropped_elements() -> None:
    blocks = list(read_document("guide.html", HTML))
    assert [(b.heading, b.text) for b in blocks] == [
        ("Guide", "Hello bold & plain text."),
        ("Guide", "first"),
        ("Guide", "second"),
        ("Guide > Code", "def f():\n    return 1"),
        ("Guide > Code", "cell one"),
        ("Guide > Code", "cell two"),
        ("Guide > Code", "After script."),
    ]
    text = " ".join(b.text for b in blocks)
    assert "dropme" not in text and "alert" not in text and "Menu" not in text
    assert "color" not in text and "Page" not in text
    assert blocks[3].code
    starts = [b.start for b in blocks]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)


def test_pdf_pages_are_positions() -> None:
    data = make_pdf(["First page about apples.", "Second page about pears."])
    blocks = list(read_document("fruit.pdf", data))
    assert [(b.page, b.text) for b in blocks] == [
        (1, "First page about apples."),
        (2, "Second page about pears."),
    ]
    assert blocks[1].start > blocks[0].start


def test_pdf_is_recognised_by_magic_under_another_name() -> None:
    blocks = list(read_document("upload.bin", make_pdf(["Magic bytes."])))
    assert blocks[0].page == 1


def test_plain_text_paragraphs_and_line_ends() -> None:
    blocks = list(read_document("notes", b"one\r\ntwo\r\n\r\n\r\n  three  \n"))
    assert blocks == [Block("", "one\ntwo", 0), Block("", "three", 12)]


def test_decoding_utf8_bom_then_latin1() -> None:
    assert decode_text("a.txt", b"\xef\xbb\xbfcaf\xc3\xa9") == "café"
    assert decode_text("a.txt", b"caf\xe9") == "café"  # not UTF-8: latin-1


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("empty.txt", b""),
        ("blank.md", b"\n   \n\t\n"),
        ("headings-only.md", b"# Title\n## Sub\n"),
        ("scripts.html", b"<script>x()</script><style>p{}</style>"),
        ("image.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"),
        ("broken.pdf", b"%PDF-1.4\nthis is not really a pdf"),
        ("truncated.pdf", make_pdf(["Some text."])[:60]),
        ("blank.pdf", make_pdf([""])),
    ],
)
def test_unreadable_files_raise_naming_the_file(name: str, data: bytes) -> None:
    with pytest.raises(InvalidRequest) as info:
        list(read_document(name, data))
    assert name in info.value.message
    assert info.value.param == "file"
