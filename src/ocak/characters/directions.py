"""Speakable text out of a streaming packet: stage directions removed, as it is generated.

``TextFieldStream`` decodes the packet's leading ``"text"`` JSON string while the
model is still writing it. ``StageFilter`` then moves stage directions
(``*smiles*``, ``(sighs)``, ``[laughs]``) to the narration and collapses the
whitespace around them, so ``text`` is only what the character says aloud. The
same filter runs on a complete text, so streamed and collected text are equal.
"""

from __future__ import annotations

import json
import re

OPEN_CLOSE = {"*": "*", "(": ")", "[": "]"}
_CLOSING = set(OPEN_CLOSE.values()) - {"*"}
_TIGHT = set(".,!?;:…")  # punctuation that takes no space before it


class StageFilter:
    """Feed text in pieces; get back the speakable part, collect directions as narration."""

    def __init__(self) -> None:
        self.narration: list[str] = []
        self._closer: str | None = None
        self._direction: list[str] = []
        self._started = False
        self._space = False  # whitespace is pending between words
        self._removed = False  # a direction was removed since the last word

    def feed(self, text: str) -> str:
        out: list[str] = []
        for ch in text:
            if self._closer is not None:
                if ch == self._closer:
                    self._close()
                else:
                    self._direction.append(ch)
            elif ch in OPEN_CLOSE:
                self._closer = OPEN_CLOSE[ch]
            elif ch in _CLOSING:  # a stray closer is not speakable either
                continue
            elif ch.isspace():
                self._space = self._started
            else:
                if (self._space or self._removed) and not (ch in _TIGHT and self._removed):
                    out.append(" ")
                out.append(ch)
                self._started = True
                self._space = self._removed = False
        return "".join(out)

    def _close(self) -> None:
        piece = " ".join("".join(self._direction).split())
        if piece:
            self.narration.append(piece)
        self._direction = []
        self._closer = None
        self._removed = self._started

    def finish(self) -> str:
        """End of text: an unclosed direction is narration too. Returns nothing speakable."""
        if self._closer is not None:
            self._close()
        return ""


def split_directions(text: str) -> tuple[str, list[str]]:
    """``"*nods* Fine."`` -> ``("Fine.", ["nods"])``."""
    f = StageFilter()
    spoken = f.feed(text) + f.finish()
    return spoken, f.narration


_START = re.compile(r'^\s*\{\s*"text"\s*:\s*"')


class TextFieldStream:
    """Decode the ``"text"`` string that opens a packet, piece by piece as JSON arrives."""

    def __init__(self) -> None:
        self.raw = ""
        self._start: int | None = None
        self._emitted = 0
        self.closed = False

    def feed(self, chunk: str) -> str:
        self.raw += chunk
        if self.closed:
            return ""
        if self._start is None:
            m = _START.match(self.raw)
            if m is None:
                return ""
            self._start = m.end()
        body = self.raw[self._start :]
        cut, closed = _scan(body)
        try:
            decoded = json.loads('"' + body[:cut] + '"', strict=False)
        except json.JSONDecodeError:
            return ""
        if not closed and decoded and "\ud800" <= decoded[-1] <= "\udbff":
            decoded = decoded[:-1]  # half a surrogate pair: wait for the rest
        self.closed = closed
        new = decoded[self._emitted :]
        self._emitted = len(decoded)
        return str(new)


def _scan(body: str) -> tuple[int, bool]:
    """Where the decodable part of a JSON string body ends, and whether its quote came."""
    i, n = 0, len(body)
    while i < n:
        ch = body[i]
        if ch == "\\":
            if i + 1 >= n:
                return i, False
            if body[i + 1] == "u":
                if i + 6 > n:
                    return i, False
                i += 6
            else:
                i += 2
        elif ch == '"':
            return i, True
        else:
            i += 1
    return n, False
