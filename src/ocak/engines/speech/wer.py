"""Word error counting for speech-to-text: how many words a transcript got wrong.

Whisper tiny.en mishears words now and then ("Bram" as "brand"); the voice tests and
``bench/voice.py`` measure that with one edit distance rather than exact matches.
"""

from __future__ import annotations

import re


def words(text: str) -> list[str]:
    """``text``'s words, lower case, without punctuation."""
    return re.findall(r"[a-z0-9']+", text.lower())


def word_errors(reference: list[str], heard: list[str]) -> int:
    """Word edit distance: substitutions, insertions and deletions."""
    row = list(range(len(heard) + 1))
    for i, ref in enumerate(reference, 1):
        diagonal, row[0] = row[0], i
        for j, word in enumerate(heard, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (ref != word))
    return row[-1]
