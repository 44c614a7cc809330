"""Fields accepted only at the value that turns them off.

Clients of every API ocak speaks send fields for features ocak lacks (samplers,
log probabilities, server tools), mostly at the value that turns them off. Such a
field is accepted at that value and refused by name at any other, so a setting
never silently does nothing. Each API keeps its own table; this is the one check.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ocak.errors import UnsupportedParameter

# A table entry: the values that are neutral, or a test of a value.
Neutral = tuple[Any, ...] | Callable[[Any], bool]


def any_value(_: Any) -> bool:
    """A field only read when another one turns its feature on (``mirostat_tau``)."""
    return True


def one_of(*values: Any) -> Callable[[Any], bool]:
    """Neutral when absent (``None``) or one of ``values``."""
    return lambda v: v is None or v in values


def empty(value: Any) -> bool:
    """Neutral when absent or empty (``logit_bias: {}``, ``banned_tokens: []``)."""
    return value in (None, [], {}, "")


def refuse_non_neutral(
    fields: Mapping[str, Any] | None, table: Mapping[str, Neutral], prefix: str = ""
) -> None:
    """Raise ``UnsupportedParameter`` for the first field of ``table`` set away from neutral."""
    for name, neutral in table.items():
        if not fields or name not in fields:
            continue
        value = fields[name]
        ok = neutral(value) if callable(neutral) else value in neutral
        if not ok:
            raise UnsupportedParameter(
                prefix + name, f"ocak accepts it only at its neutral value, not {value!r}"
            )
