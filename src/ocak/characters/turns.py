"""Turn-taking: which character speaks next in a session.

1. The character the request names (``character``).
2. Otherwise the character addressed by name in the player's text: the one
   whose name (full, first word, or id) appears earliest.
3. Otherwise the one who has waited longest since it last spoke (never spoken
   counts as longest; ties go to who joined first), so a group takes turns.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ocak.characters.cards import Character
from ocak.errors import InvalidRequest


def _names(card: Character) -> list[str]:
    names = [card.name, card.id.replace("-", " ").replace("_", " ")]
    first = card.name.split()[0] if card.name.split() else ""
    if len(first) >= 3:
        names.append(first)
    return [n for n in dict.fromkeys(names) if n.strip()]


def mention_position(card: Character, text: str) -> int | None:
    """Where ``card`` is first named in ``text`` (whole words, any case), or None."""
    best: int | None = None
    for name in _names(card):
        m = re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text, re.IGNORECASE)
        if m and (best is None or m.start() < best):
            best = m.start()
    return best


def choose_speaker(
    members: Sequence[Character],
    text: str,
    *,
    explicit: str | None = None,
    last_spoke: dict[str, int] | None = None,
) -> Character:
    if not members:
        raise InvalidRequest("No character is in this session to answer.", param="character")
    if explicit is not None:
        for card in members:
            if card.id == explicit:
                return card
        raise InvalidRequest(
            f"The character '{explicit}' is not in this session "
            f"(members: {', '.join(c.id for c in members)}).",
            param="character",
        )
    if len(members) == 1:
        return members[0]
    named = [
        (pos, i) for i, c in enumerate(members) if (pos := mention_position(c, text)) is not None
    ]
    if named:
        return members[min(named)[1]]
    spoke = last_spoke or {}
    order = sorted(range(len(members)), key=lambda i: (spoke.get(members[i].id, -1), i))
    return members[order[0]]
