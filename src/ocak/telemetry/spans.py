"""A request's spans: cheap helpers that do nothing when the request is not traced.

The HTTP edge starts a ``RequestTrace`` (tracing.py) and puts it in the OpenTelemetry
context, beside its server span; every layer below asks ``current()`` for it. When
tracing is off nothing is put there, and each helper returns at once: one context-variable
read, no span, no attribute built (bench/gateway.py --tracing measures it).

Spans are attached (made current, so what runs inside is their child) only around code
that does not ``yield``: an async generator resumes in its consumer's context, where a
context attached before a ``yield`` cannot be detached. Work done in another thread
(the llama.cpp decode loop) is recorded after the fact, from timestamps (``past``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

Attributes = Mapping[str, Any]

_REQUEST = otel_context.create_key("ocak-request-trace")
_OFF: AbstractContextManager[None] = contextlib.nullcontext()


@dataclass(eq=False)
class RequestTrace:
    """One traced request: the tracer its spans come from, its server span, and the spans
    that end with it (``until_end``: a model call's span, finished from the record)."""

    tracer: Tracer
    server: Span
    continued: bool = False  # the trace is the caller's (it sent a traceparent)
    until_end: list[Span] = field(default_factory=list)

    @property
    def trace_id(self) -> str:
        return format(self.server.get_span_context().trace_id, "032x")

    @property
    def span_id(self) -> str:
        return format(self.server.get_span_context().span_id, "016x")

    def context(self) -> Context:
        """The OpenTelemetry context of the request: its server span, and itself."""
        ctx = trace.set_span_in_context(self.server, Context())
        return otel_context.set_value(_REQUEST, self, ctx)


def current() -> RequestTrace | None:
    """The traced request this code runs for; None when tracing is off."""
    return cast("RequestTrace | None", otel_context.get_value(_REQUEST))


def start(
    name: str,
    attributes: Attributes | None = None,
    *,
    parent: Span | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
) -> Span | None:
    """A span, not made current (``active`` does that), child of ``parent`` or of the
    current span; None when the request is not traced."""
    request = current()
    if request is None:
        return None
    ctx = None if parent is None else trace.set_span_in_context(parent)
    return request.tracer.start_span(name, context=ctx, kind=kind, attributes=attributes)


def until_request_end(span: Span | None) -> None:
    """End ``span`` with the request (and its record's figures, tracing.py)."""
    request = current()
    if span is not None and request is not None:
        request.until_end.append(span)


@contextlib.contextmanager
def _attached(span: Span) -> Iterator[Span]:
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield span
    finally:
        otel_context.detach(token)


def active(span: Span | None) -> AbstractContextManager[Span | None]:
    """Make ``span`` current for the block (it is not ended); nothing for None."""
    return _OFF if span is None else _attached(span)


@contextlib.contextmanager
def _step(span: Span) -> Iterator[Span]:
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield span
    except BaseException as exc:
        failed(span, exc)
        raise
    finally:
        span.end()
        otel_context.detach(token)


def span(
    name: str, attributes: Attributes | None = None, *, kind: SpanKind = SpanKind.INTERNAL
) -> AbstractContextManager[Span | None]:
    """A span around the block, current inside it, ended (an exception marked) after it;
    the block gets None when the request is not traced."""
    request = current()
    if request is None:
        return _OFF
    return _step(request.tracer.start_span(name, kind=kind, attributes=attributes))


def error_type(exc: BaseException) -> str:
    """``error.type``: ocak's error code (``upstream_timeout``), else the class name."""
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) and code else type(exc).__name__


def failed(span: Span, exc: BaseException) -> None:
    """Mark ``span`` as ended by ``exc``: its type only (a message may quote a request,
    and no content goes into a span). A cancelled step is not an error."""
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        span.set_attribute("ocak.cancelled", True)
        return
    kind = error_type(exc)
    span.set_attribute("error.type", kind)
    span.set_status(Status(StatusCode.ERROR, kind))


def finish(
    span: Span | None, attributes: Attributes | None = None, *, error: BaseException | None = None
) -> None:
    """Set ``attributes`` on ``span`` (and ``error``), then end it; nothing for None."""
    if span is None:
        return
    if attributes:
        span.set_attributes(attributes)
    if error is not None:
        failed(span, error)
    span.end()


@dataclass(frozen=True, slots=True)
class Captured:
    """Where spans recorded after the fact go: the request's tracer and a parent context."""

    tracer: Tracer
    context: Context


def capture() -> Captured | None:
    """The current request and context, for spans of work that runs elsewhere (a decode
    thread) and is recorded once it is over; None when not traced."""
    request = current()
    if request is None:
        return None
    return Captured(request.tracer, otel_context.get_current())


def clock_offset() -> int:
    """Nanoseconds to add to ``time.monotonic()`` readings for span timestamps."""
    return time.time_ns() - time.monotonic_ns()


def past(
    where: Captured,
    name: str,
    started: float,
    ended: float,
    attributes: Attributes | None = None,
    *,
    offset: int | None = None,
) -> None:
    """A span that ran from ``started`` to ``ended`` (``time.monotonic()`` readings;
    pass one ``clock_offset()`` to spans that must meet exactly)."""
    if offset is None:
        offset = clock_offset()
    recorded = where.tracer.start_span(
        name, context=where.context, attributes=attributes, start_time=int(started * 1e9) + offset
    )
    recorded.end(end_time=int(max(ended, started) * 1e9) + offset)
