"""Relationship state of one character toward one player: trust, respect, familiarity.

Each is a number with a label. Trust and respect run from -100 to 100,
familiarity from 0 to 100. A turn's packet carries small changes (each within
``MAX_STEP``); they are applied with clamping and the result is fed into the
next prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_STEP = 5
DIMENSIONS = ("trust", "respect", "familiarity")
RANGES = {"trust": (-100, 100), "respect": (-100, 100), "familiarity": (0, 100)}

# (upper bound exclusive, label), scanned in order.
_LABELS: dict[str, list[tuple[float, str]]] = {
    "trust": [(-60, "hostile"), (-20, "suspicious"), (20, "neutral"), (60, "trusting")],
    "respect": [(-60, "contemptuous"), (-20, "dismissive"), (20, "neutral"), (60, "respectful")],
    "familiarity": [(10, "stranger"), (30, "acquaintance"), (60, "familiar"), (90, "close")],
}
_TOP = {"trust": "devoted", "respect": "admiring", "familiarity": "intimate"}


def label(dimension: str, value: float) -> str:
    for bound, name in _LABELS[dimension]:
        if value < bound:
            return name
    return _TOP[dimension]


def clamp(dimension: str, value: float) -> float:
    lo, hi = RANGES[dimension]
    return float(min(max(value, lo), hi))


@dataclass(slots=True)
class RelationshipState:
    trust: float = 0.0
    respect: float = 0.0
    familiarity: float = 0.0
    turns: int = 0

    def get(self, dimension: str) -> float:
        value: float = getattr(self, dimension)
        return value

    def apply(self, change: dict[str, float]) -> dict[str, float]:
        """Apply a turn's change; returns the change actually applied (after clamping)."""
        applied: dict[str, float] = {}
        for dim in DIMENSIONS:
            step = max(-MAX_STEP, min(MAX_STEP, float(change.get(dim, 0))))
            before = self.get(dim)
            after = clamp(dim, before + step)
            setattr(self, dim, after)
            applied[dim] = after - before
        self.turns += 1
        return applied

    def describe(self) -> str:
        """The line the prompt carries, e.g. ``trust 12 (neutral), respect ...``."""
        return ", ".join(
            f"{dim} {self.get(dim):.0f} ({label(dim, self.get(dim))})" for dim in DIMENSIONS
        )
