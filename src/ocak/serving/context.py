"""What a model call carries besides its body: its record, its key, its locality demand."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ocak.protocol.record import RequestRecord
from ocak.store.keys import KeyInfo


@dataclass(slots=True)
class CallContext:
    """One call in progress, as every transport describes it to the serving layer."""

    record: RequestRecord
    key: KeyInfo | None = None
    asked_local: bool = False  # the caller (another ocak) demands local serving
    # The knowledge chunks retrieval put into the prompt (the response names them).
    retrieved: list[Any] = field(default_factory=list)
    # The registry prompt version the request was rendered from (``prompts.Rendered``).
    prompt: Any = None
    # The model call's span (``chat {model}``, ocak.telemetry) when the request is traced.
    span: Any = None
    # The conversation it belongs to (x-ocak-session): an alias with affinity keeps it on
    # one replica.
    session: str | None = None

    @property
    def local_only(self) -> bool:
        """The call must not leave this machine: its key says so, or its caller asks."""
        return self.asked_local or (self.key is not None and self.key.locality == "local")
