"""Constrained answers that finish within ``max_tokens``.

A grammar bounds what the model may write, not how long it takes: a string the
model keeps extending, an array it keeps growing, ran into ``max_tokens`` and
ended as half a document (a 400 ``output_truncated``). Here each step knows the
shortest way to close the document from where it stands (a *closing path*,
found by a greedy search over llguidance's matcher: forced tokens first, then
the shortest closing tokens the grammar allows). When the tokens left come down
to that path plus a small margin, decoding follows the path: the answer ends as
a complete, valid document inside its budget. If even the shortest valid answer
is longer than the budget, that is known before decoding and refused as a 400
naming ``max_tokens``.

This is pure llguidance logic over a tokenizer, so it is tested without a model.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import llguidance as llg
import numpy as np

from ocak.errors import InvalidRequest

# Tokens that close what is open ("}", "]", '"') or are a whole minimal value.
_CLOSE_CHARS = '"}]'
_VALUES = ("", '""', "0", "[]", "{}", "null", "false", "true")
# Free decoding continues while more than this many tokens are left beyond the path.
BASE_MARGIN = 1
# How far (in steps) to search for a closing path before giving up on it.
SEARCH_LIMIT = 256


class BudgetTooSmall(InvalidRequest):
    """Even the shortest answer the grammar allows does not fit in the budget."""

    code = "max_tokens_too_small"

    def __init__(self, budget: int, shortest: int) -> None:
        super().__init__(
            f"max_tokens is {budget}, but the shortest answer this format allows takes "
            f"{shortest} tokens; raise max_tokens to at least {shortest}.",
            param="max_tokens",
        )


@dataclass(frozen=True, slots=True)
class Vocab:
    """One tokenizer's tokens for closing documents fast (built once per model).

    ``quoted``: closing tokens that start with a quote (they end a string), ``plain``:
    the others (``}``, ``]``...), ``values``: whole minimal values; each longest first,
    so the search closes in as few tokens as the vocabulary allows.
    """

    tokenizer: llg.LLTokenizer
    quoted: list[int]
    plain: list[int]
    values: list[int]
    eos: frozenset[int]

    def order(self, in_string: bool) -> list[int]:
        """Candidates in preference order: end the string first when inside one."""
        if in_string:
            return [*self.quoted, *self.plain, *self.values]
        # Outside a string, a quote opens one: prefer tokens that also close it ("").
        text = self.tokenizer.decode_bytes
        paired = [t for t in self.quoted if text([t]).count(b'"') % 2 == 0]
        opening = sorted((t for t in self.quoted if t not in paired), key=lambda t: len(text([t])))
        return [*self.plain, *paired, *self.values, *opening]


def closing_vocab(tokenizer: llg.LLTokenizer, eos: set[int] | None = None) -> Vocab:
    """The closing tokens of ``tokenizer``'s vocabulary."""
    closers: dict[int, int] = {}
    values: dict[int, int] = {}
    for n in range(1, 4):
        for chars in itertools.product(_CLOSE_CHARS, repeat=n):
            _single(tokenizer, "".join(chars), closers)
    for value, closer in itertools.product(_VALUES, ["", *_CLOSE_CHARS]):
        if value:
            _single(tokenizer, value + closer, values)
    text = {t: tokenizer.decode_bytes([t]) for t in closers}
    longest = sorted(closers, key=lambda t: -closers[t])
    return Vocab(
        tokenizer,
        quoted=[t for t in longest if text[t].startswith(b'"')],
        plain=[t for t in longest if not text[t].startswith(b'"')],
        values=sorted(values, key=lambda t: -values[t]),
        eos=frozenset({*tokenizer.eos_tokens, *(eos or ())}),
    )


def _single(tokenizer: llg.LLTokenizer, text: str, into: dict[int, int]) -> None:
    ids = tokenizer.tokenize_str(text)
    if len(ids) == 1 and not tokenizer.is_special_token(ids[0]):
        into[ids[0]] = len(text)


@dataclass(slots=True)
class Quotes:
    """Whether the text so far ends inside a JSON string (quotes, escapes)."""

    inside: bool = False
    escape: bool = False

    def feed(self, piece: bytes) -> None:
        for b in piece:
            if self.escape:
                self.escape = False
            elif self.inside and b == 0x5C:  # backslash
                self.escape = True
            elif b == 0x22:  # quote
                self.inside = not self.inside


def _first_allowed(matcher: llg.LLMatcher, eos: frozenset[int]) -> int | None:
    bits = np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8)
    allowed = np.flatnonzero(np.unpackbits(bits, bitorder="little"))
    for token in allowed[:64]:
        if int(token) not in eos:
            return int(token)
    return None


def closing_path(
    matcher: llg.LLMatcher,
    vocab: Vocab,
    quotes: Quotes | None = None,
    limit: int = SEARCH_LIMIT,
) -> list[int] | None:
    """Tokens that take ``matcher`` (left untouched) to a complete document, or None.

    Greedy: the tokens the grammar forces, else the first closing token it allows
    (ending an open string first), else the lowest-numbered token it allows. None
    when no path of at most ``limit`` tokens was found.
    """
    m = matcher.deep_copy()
    q = Quotes() if quotes is None else Quotes(quotes.inside, quotes.escape)
    path: list[int] = []
    while len(path) <= limit:
        if m.is_error():
            return None
        if m.is_stopped() or m.is_accepting():
            return path
        forced = m.compute_ff_tokens()
        taken = m.try_consume_tokens(forced) if forced else 0
        if taken:
            chosen = forced[:taken]
        else:
            chosen = []
            for token in vocab.order(q.inside):
                if m.try_consume_tokens([token]) == 1:
                    chosen = [token]
                    break
            else:
                token_or_none = _first_allowed(m, vocab.eos)
                if token_or_none is None or not m.consume_token(token_or_none):
                    return None
                chosen = [token_or_none]
        path.extend(chosen)
        q.feed(vocab.tokenizer.decode_bytes(chosen))
    return None


class Budget:
    """One constrained sequence's token budget: when to stop free decoding and close.

    ``next_forced()`` runs before each token: None lets the grammar mask decide, a
    token id means that token must come next. ``accepted()`` follows each token the
    matcher consumed. The margin grows by the largest rise in the closing path seen so
    far (opening an array item or a key makes the path longer in one step), so the
    next such step cannot overshoot the budget.
    """

    def __init__(
        self,
        matcher: llg.LLMatcher,
        vocab: Vocab,
        max_tokens: int,
    ) -> None:
        self.matcher = matcher
        self.vocab = vocab
        self.quotes = Quotes()
        self.left = max_tokens
        self.plan: list[int] | None = None
        self.jump = 0
        path = closing_path(matcher, vocab, limit=max(SEARCH_LIMIT, max_tokens))
        if path is not None and len(path) > max_tokens:
            raise BudgetTooSmall(max_tokens, len(path))
        self.need: int | None = None if path is None else len(path)

    @property
    def closing(self) -> bool:
        """True once decoding follows the closing path."""
        return self.plan is not None

    def next_forced(self) -> int | None:
        """The token that must come next to finish in budget, or None for free decoding."""
        if self.plan is None:
            path = closing_path(self.matcher, self.vocab, self.quotes, limit=self.left)
            if path is None:  # no way to close in what is left: let it run (and fail loudly)
                self.need = None
                return None
            if self.need is not None:
                self.jump = max(self.jump, len(path) - (self.need - 1))
            self.need = len(path)
            if self.left - len(path) > BASE_MARGIN + self.jump:
                return None
            self.plan = path
        return self.plan[0] if self.plan else None

    def accepted(self, token: int) -> None:
        """Count ``token`` against the budget; follow the plan if one is running."""
        self.left -= 1
        self.quotes.feed(self.vocab.tokenizer.decode_bytes([token]))
        if self.plan:
            if token == self.plan[0]:
                self.plan.pop(0)
            else:  # pragma: no cover - the mask allows only the plan's token
                self.plan = None

    def finished(self) -> bool:
        """True when the closing path has been written and the document is complete."""
        return self.plan == [] and self.matcher.is_accepting()
