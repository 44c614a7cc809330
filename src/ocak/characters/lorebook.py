"""Lorebook activation: entries whose keys appear in recent messages, within a token budget.

As in SillyTavern: an enabled entry is active when one of its ``keys`` occurs in
the last ``scan_depth`` messages (a ``selective`` entry also needs one of its
``secondary_keys``); ``constant`` entries are always active. Active entries are
kept by ``priority`` (higher first) while they fit the book's ``token_budget``,
then placed in ``insertion_order``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ocak.characters.cards import Lorebook, LoreEntry


@dataclass(frozen=True, slots=True)
class ActiveLore:
    index: int
    name: str
    content: str
    tokens: int


def _matches(key: str, text: str, entry: LoreEntry) -> bool:
    key = key.strip()
    if not key:
        return False
    flags = 0 if entry.case_sensitive else re.IGNORECASE
    pattern = re.escape(key)
    if entry.whole_words:
        pattern = rf"(?<!\w){pattern}(?!\w)"
    return re.search(pattern, text, flags) is not None


def entry_label(entry: LoreEntry, index: int) -> str:
    return entry.name or (entry.keys[0] if entry.keys else f"entry {index}")


def activate(
    book: Lorebook | None,
    recent: Sequence[str],
    count_tokens: Callable[[str], int],
    *,
    budget: int | None = None,
) -> list[ActiveLore]:
    """The entries that go into this turn's prompt, in insertion order."""
    if book is None or not book.entries:
        return []
    text = "\n".join(recent[-book.scan_depth :])
    candidates: list[tuple[int, LoreEntry]] = []
    for i, entry in enumerate(book.entries):
        if not entry.enabled or not entry.content.strip():
            continue
        if entry.constant:
            candidates.append((i, entry))
            continue
        if not any(_matches(k, text, entry) for k in entry.keys):
            continue
        if (
            entry.selective
            and entry.secondary_keys
            and not any(_matches(k, text, entry) for k in entry.secondary_keys)
        ):
            continue
        candidates.append((i, entry))
    left = book.token_budget if budget is None else min(budget, book.token_budget)
    chosen: list[tuple[int, LoreEntry, int]] = []
    for i, entry in sorted(candidates, key=lambda c: (-c[1].priority, c[1].insertion_order, c[0])):
        tokens = count_tokens(entry.content)
        if tokens <= left:
            chosen.append((i, entry, tokens))
            left -= tokens
    chosen.sort(key=lambda c: (c[1].insertion_order, c[0]))
    return [ActiveLore(i, entry_label(e, i), e.content.strip(), t) for i, e, t in chosen]
