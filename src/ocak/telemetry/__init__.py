"""OpenTelemetry traces of ocak's requests (docs/tracing.md), off unless an OTLP endpoint
is set. Bottom layer: the edges start a request's trace (``tracing``), and the serving,
gateway, engine and character layers add their steps' spans (``spans``), with the GenAI
semantic-convention attributes (``genai``)."""

from opentelemetry.trace import Span, SpanKind

from ocak.telemetry.spans import (
    Captured,
    RequestTrace,
    active,
    capture,
    clock_offset,
    current,
    failed,
    finish,
    past,
    span,
    start,
    until_request_end,
)
from ocak.telemetry.tracing import Tracing

__all__ = [
    "Captured",
    "RequestTrace",
    "Span",
    "SpanKind",
    "Tracing",
    "active",
    "capture",
    "clock_offset",
    "current",
    "failed",
    "finish",
    "past",
    "span",
    "start",
    "until_request_end",
]
