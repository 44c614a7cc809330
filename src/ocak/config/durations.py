"""Durations in days and weeks as settings take them: ``90m``, ``12h``, ``30d``, ``2w``.

``keep_alive`` speaks Ollama's spelling (seconds to hours); a retention period is counted
in days, so it has its own parser, with the units ``ocak keys --budget-period`` takes.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_LONG = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)


def parse_period(value: Any) -> Any:
    """Seconds, or ``90s``/``30m``/``12h``/``30d``/``2w`` -> seconds (a float); anything
    else is left for the field's own validation to refuse, naming the field."""
    if isinstance(value, str):
        text = value.strip()
        match = _LONG.match(text)
        if match is not None:
            return float(match.group(1)) * _UNITS[match.group(2).lower()]
        try:
            return float(text)
        except ValueError:
            raise ValueError(
                f"'{value}' is not a duration: use 90m, 12h, 30d, 2w or seconds"
            ) from None
    return value


Period = Annotated[float, BeforeValidator(parse_period)]
