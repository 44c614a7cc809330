"""Text plumbing shared by engines: UTF-8-safe detokenizing and stop sequences."""

from __future__ import annotations

import codecs

from ocak.errors import InvalidRequest


class Utf8Stream:
    """Turns token byte pieces into text without ever splitting a character.

    A multi-byte character whose bytes span several tokens (emoji, many Turkish
    letters in small vocabularies) is held back until it is complete.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> str:
        return self._decoder.decode(data)

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


class StopMatcher:
    """Finds stop sequences in streamed text, holding back what might start one.

    ``feed`` returns the text that is safe to emit; ``matched`` is the stop sequence
    that ended the text (the earliest in it), which is itself never emitted.
    """

    def __init__(self, stops: list[str]) -> None:
        self._stops = [s for s in stops if s]
        self._longest = max((len(s) for s in self._stops), default=0)
        self._pending = ""
        self.matched: str | None = None

    @property
    def stopped(self) -> bool:
        return self.matched is not None

    def feed(self, text: str) -> str:
        if not self._stops:
            return text
        buf = self._pending + text
        first, matched = -1, None
        for stop in self._stops:
            i = buf.find(stop)
            if i != -1 and (first == -1 or i < first):
                first, matched = i, stop
        if matched is not None:
            self._pending = ""
            self.matched = matched
            return buf[:first]
        keep = self._partial_suffix(buf)
        self._pending = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep]

    def flush(self) -> str:
        """Text held back at the end of a generation that stopped for another reason."""
        out, self._pending = self._pending, ""
        return out

    def _partial_suffix(self, buf: str) -> int:
        """Length of the longest suffix of ``buf`` that is a proper prefix of a stop."""
        for k in range(min(len(buf), self._longest - 1), 0, -1):
            tail = buf[-k:]
            if any(s.startswith(tail) for s in self._stops):
                return k
        return 0


def check_ids(ids: list[int], vocab_size: int) -> None:
    """Token ids a detokenizer may read: each in ``[0, vocab_size)``, else a 400."""
    for i, token in enumerate(ids):
        if not 0 <= token < vocab_size:
            raise InvalidRequest(
                f"Token id {token} is outside the model's vocabulary (0..{vocab_size - 1}).",
                param=f"tokens.[{i}]",
            )
