"""Lip-sync data from a synthesis's phoneme timings: OVR visemes and word timings.

Piper voices speak espeak-ng's IPA phonemes and, with alignments, say how many samples
each phoneme lasted. ``visemes`` maps them to the 15 Oculus/OVR visemes (the set Unity's
and Unreal's lip-sync plugins and Inworld use) with the table below; ``words`` groups
them at word boundaries into word start and end times. Times are milliseconds from the
start of the audio they belong to.

The phoneme-to-viseme table (OVR's reference words in brackets):

    sil  silence, pauses, punctuation        PP  p b m          [put, bat, mat]
    FF   f v             [fat, vat]           TH  θ ð            [think, that]
    DD   t d ɾ           [tip, doll]          kk  k ɡ g ŋ x h    [call, gas]
    CH   tʃ dʒ ʃ ʒ       [chair, join, she]   SS  s z            [sir, zeal]
    nn   n l ɫ           [lot, not]           RR  ɹ r ɚ ɝ        [red]
    aa   a ɑ æ ʌ ɐ       [car]                E   e ɛ ə ɜ        [bed]
    ih   i ɪ j ᵻ         [tip]                oh  o ɔ ɒ          [toe]
    ou   u ʊ w           [book]

Marks that are not sounds of their own (stress ˈ ˌ, length ː, palatalization ʲ, the
word boundary) lengthen the sound before them; an unknown symbol keeps the mouth where
it was.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

VISEMES: tuple[str, ...] = (
    "sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E", "ih", "oh", "ou",
)  # fmt: skip

_TABLE: dict[str, str] = {}
for _viseme, _phonemes in {
    "sil": "^ $ . , ! ? ; : … — -",
    "PP": "p b m",
    "FF": "f v",
    "TH": "θ ð",
    "DD": "t d ɾ",
    "kk": "k ɡ g ŋ x h ʔ",
    "CH": "ʃ ʒ",
    "SS": "s z",
    "nn": "n l ɫ",
    "RR": "ɹ r ɚ ɝ",
    "aa": "a ɑ æ ʌ ɐ",
    "E": "e ɛ ə ɜ",
    "ih": "i ɪ j ᵻ",
    "oh": "o ɔ ɒ",
    "ou": "u ʊ w",
}.items():
    for _p in _phonemes.split():
        _TABLE[_p] = _viseme
# t and d before ʃ/ʒ are the affricates tʃ dʒ (espeak writes them as two symbols)
_AFFRICATE_HEADS = {"t", "d"}
_AFFRICATE_TAILS = {"ʃ", "ʒ"}
_MARKS = {"ˈ", "ˌ", "ː", "ʲ", " "}
WORD = re.compile(r"[\w'’]+(?:-[\w'’]+)*")


@dataclass(frozen=True, slots=True)
class Phone:
    """One phoneme of a synthesis and how many samples it lasted."""

    symbol: str
    samples: int


@dataclass(frozen=True, slots=True)
class Viseme:
    viseme: str
    start_ms: int


@dataclass(frozen=True, slots=True)
class WordTiming:
    word: str
    start_ms: int
    end_ms: int


def viseme_of(symbol: str) -> str | None:
    """The OVR viseme of an espeak IPA phoneme, or None for a mark or unknown symbol."""
    return _TABLE.get(symbol)


def visemes(phones: Sequence[Phone], sample_rate: int) -> list[Viseme]:
    """The viseme track of ``phones``: each change of mouth shape with its start time."""
    out: list[Viseme] = []
    at = 0
    for i, phone in enumerate(phones):
        shape = viseme_of(phone.symbol)
        nxt = phones[i + 1].symbol if i + 1 < len(phones) else ""
        if phone.symbol in _AFFRICATE_HEADS and nxt in _AFFRICATE_TAILS:
            shape = "CH"
        if shape is not None and (not out or out[-1].viseme != shape):
            out.append(Viseme(shape, round(at * 1000 / sample_rate)))
        at += phone.samples
    if not out or out[-1].viseme != "sil":
        out.append(Viseme("sil", round(at * 1000 / sample_rate)))
    return out


def words(text: str, phones: Sequence[Phone], sample_rate: int) -> list[WordTiming]:
    """Start and end of each word of ``text`` in the audio ``phones`` made.

    espeak-ng marks word boundaries: when its words and the text's agree in number, each
    word takes its group's time; when they do not (a number read as several words, an
    abbreviation), the spoken span is shared out in proportion to the words' lengths.
    """
    said = WORD.findall(text)
    if not said:
        return []
    groups: list[tuple[int, int]] = []
    start: int | None = None
    end = at = 0
    for phone in phones:
        boundary = phone.symbol == " " or viseme_of(phone.symbol) == "sil"
        if boundary and start is not None:
            groups.append((start, end))
            start = None
        elif not boundary and phone.symbol not in _MARKS:
            start = at if start is None else start
            end = at + phone.samples
        elif start is not None:  # a mark inside a word lengthens it
            end = at + phone.samples
        at += phone.samples
    if start is not None:
        groups.append((start, end))

    def ms(samples: float) -> int:
        return round(samples * 1000 / sample_rate)

    if len(groups) == len(said):
        return [WordTiming(w, ms(a), ms(b)) for w, (a, b) in zip(said, groups, strict=True)]
    if not groups:
        return []
    first, last = groups[0][0], groups[-1][1]
    total = sum(len(w) for w in said)
    out, pos = [], float(first)
    for w in said:
        span = (last - first) * len(w) / total
        out.append(WordTiming(w, ms(pos), ms(pos + span)))
        pos += span
    return out
