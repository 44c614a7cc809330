"""One record per request: what a usage row, a metric and a log line need to know.

Every edge (HTTP, gRPC) makes one, the serving layer fills it (model, backend,
tokens, time to first token), and the app's sinks receive it when the request
ends. A plain dataclass, below every layer, so engines' streams and the gateway
can fill it without knowing the transport.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

log = logging.getLogger("ocak.requests")

Status = Literal["completed", "failed", "cancelled", "rejected"]


@dataclass
class RequestRecord:
    """What a usage record, a metric and a log line need to know about one request."""

    request_id: str
    method: str
    path: str
    started_at: float = field(default_factory=time.time)
    started: float = field(default_factory=time.monotonic)
    key_name: str | None = None
    key_id: int | None = None
    model: str | None = None
    backend: str | None = None
    locality: str | None = None
    stream: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token_at: float | None = None
    ended: float | None = None
    status: Status = "completed"
    http_status: int = 200
    error_code: str | None = None
    finish_reason: str | None = None
    # Request and response text, captured only when the operator logs or stores content.
    content: dict[str, Any] | None = None
    # With ``store_content``: a chat request's whole body and its answer, for the usage store.
    exchange: dict[str, Any] | None = None
    # The registry prompt version a chat request was rendered from ("npc-greeting@3"), and
    # the messages it rendered into (what the model saw; datasets store these).
    prompt: str | None = None
    rendered: list[dict[str, Any]] | None = None
    # The OpenTelemetry trace this request's spans belong to (32 hex digits), when traced.
    trace_id: str | None = None

    @property
    def is_api(self) -> bool:
        """Model calls (the ones usage records are about)."""
        return self.model is not None

    @property
    def ttft(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started

    @property
    def duration(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def first_token(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()

    def fail(self, http_status: int, code: str | None) -> None:
        self.status = "rejected" if http_status < 500 and self.first_token_at is None else "failed"
        self.http_status = http_status
        self.error_code = code


Sink = Callable[[RequestRecord], None]


def run_sinks(sinks: list[Sink], record: RequestRecord) -> None:
    """Hand ``record`` to each sink; a broken sink must not break the response."""
    for sink in sinks:
        try:
            sink(record)
        except Exception:
            log.exception("request record sink failed")
