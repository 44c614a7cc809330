"""Knowledge bases: named document collections, chunked, embedded and searched.

A document's bytes become structured text blocks (``readers``), the blocks become
chunks along the document's own headings and paragraphs (``chunking``), and the
chunks are embedded and kept in one SQLite file, searched by vector, by keyword
(FTS5 BM25) or both fused (``store``). The embedder is injected as a callable, so
this package never imports an engine.
"""
