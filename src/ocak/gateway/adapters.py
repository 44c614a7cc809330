"""LoRA adapters named in a model name, for clients that can set only ``model``.

``BASE@ADAPTER`` applies the stored adapter ``ADAPTER`` to ``BASE`` (a local model or an
alias with local targets) at scale 1; ``BASE@ADAPTER:0.5`` at another scale;
``BASE@A:0.5,B`` several at once. An adapter's own name, when its manifest names a
base model, is the same as ``BASE@ADAPTER``. A trailing ``:NUMBER`` is always the
scale (store names carry no such tag). The request field ``adapters`` adds to these.
"""

from __future__ import annotations

import math

from ocak.errors import InvalidRequest
from ocak.protocol.generation import Adapter
from ocak.protocol.openai import ADAPTER_SCALE, MAX_ADAPTERS


def split_name(name: str) -> tuple[str, tuple[Adapter, ...]]:
    """``(base, adapters)`` of a model name; no adapters when it carries no ``@``."""
    base, at, spec = name.rpartition("@")
    if not at:
        return name, ()
    if not base or not spec:
        raise InvalidRequest(
            f"'{name}' is not a model name: write BASE@ADAPTER or BASE@ADAPTER:SCALE",
            param="model",
        )
    adapters = tuple(_adapter(part, name) for part in spec.split(","))
    if len(adapters) > MAX_ADAPTERS:
        raise InvalidRequest(
            f"'{name}' names {len(adapters)} adapters; at most {MAX_ADAPTERS} apply at once",
            param="model",
        )
    return base, adapters


def _adapter(part: str, name: str) -> Adapter:
    head, colon, tail = part.rpartition(":")
    scale = 1.0
    if colon:
        try:
            scale = float(tail)
        except ValueError:
            head = part  # a tag of the adapter's own name, not a scale
        else:
            if not math.isfinite(scale) or abs(scale) > ADAPTER_SCALE:
                raise InvalidRequest(
                    f"'{name}': an adapter's scale must be a number from "
                    f"{-ADAPTER_SCALE:g} to {ADAPTER_SCALE:g}, not {tail}",
                    param="model",
                )
    else:
        head = part
    if not head:
        raise InvalidRequest(f"'{name}' names an adapter without a name", param="model")
    return Adapter(head, scale)


def merge(first: tuple[Adapter, ...], then: tuple[Adapter, ...]) -> tuple[Adapter, ...]:
    """``first`` with ``then`` applied over it: an adapter named in both takes the later
    scale, in its first place (llama.cpp applies each adapter once)."""
    out: dict[str, Adapter] = {a.name: a for a in first}
    for a in then:
        out[a.name] = a
    return tuple(out.values())
