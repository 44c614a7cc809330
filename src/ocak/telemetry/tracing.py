"""This server's tracer: an OTLP/HTTP exporter when ``otlp_endpoint`` is set, else none.

``Tracing.from_settings`` builds a ``TracerProvider`` of its own (a batch span processor
over an ``OTLPSpanExporter``, protobuf over HTTP); it is not installed as OpenTelemetry's
process-wide provider, so two servers in one process (tests, an embedding application)
each keep theirs, and tracing off leaves nothing behind. ``start_request`` begins a
request's server span, continuing the caller's W3C ``traceparent`` when it sent one;
``close_request`` ends it, and the model-call spans that end with it, from the request's
record. The SDK and the exporter are imported only when tracing is on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ocak import __version__
from ocak.protocol.record import RequestRecord
from ocak.telemetry import genai
from ocak.telemetry.spans import RequestTrace

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from ocak.config import Settings

log = logging.getLogger("ocak.telemetry")

TRACES_PATH = "/v1/traces"
EXPORT_TIMEOUT = 5.0  # seconds per export request: a collector that is down is dropped soon
EXPORT_DELAY_MS = 1000  # spans leave in batches at most this often
_PROPAGATOR = TraceContextTextMapPropagator()


def traces_url(endpoint: str) -> str:
    """The URL spans are posted to: the endpoint as given when it names ``/v1/traces``,
    else with it added (as OTEL_EXPORTER_OTLP_ENDPOINT is read)."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith(TRACES_PATH) else endpoint + TRACES_PATH


class Tracing:
    """The tracer provider of one server, or none (tracing off)."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self.provider = provider
        self.tracer = (
            provider.get_tracer("ocak", __version__, schema_url=genai.SCHEMA_URL)
            if provider is not None
            else None
        )

    @property
    def enabled(self) -> bool:
        return self.tracer is not None

    @classmethod
    def from_settings(cls, settings: Settings) -> Tracing:
        """Off without ``otlp_endpoint``; on, spans are batched to it in a thread of the
        SDK's (a collector that is down costs dropped spans and a warning, never a request)."""
        if settings.otlp_endpoint is None:
            return cls()
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        exporter = OTLPSpanExporter(
            endpoint=traces_url(settings.otlp_endpoint),
            headers=dict(settings.otlp_headers),
            timeout=EXPORT_TIMEOUT,
            compression=Compression.NoCompression,
        )
        provider = TracerProvider(
            resource=Resource(
                {"service.name": settings.service_name, "service.version": __version__}
            ),
            sampler=ParentBased(TraceIdRatioBased(settings.trace_sample_ratio)),
        )
        provider.add_span_processor(
            BatchSpanProcessor(exporter, schedule_delay_millis=EXPORT_DELAY_MS)
        )
        where = urlsplit(traces_url(settings.otlp_endpoint))
        log.info("tracing: spans go to %s://%s%s", where.scheme, where.hostname, where.path)
        return cls(provider)

    def start_request(
        self, method: str, attributes: Mapping[str, Any], traceparent: str | None
    ) -> RequestTrace:
        """A request's server span (call only when ``enabled``): a child of the caller's
        span when ``traceparent`` is valid W3C trace context, else a new trace's root."""
        assert self.tracer is not None
        parent = Context()
        if traceparent:
            parent = _PROPAGATOR.extract({"traceparent": traceparent}, parent)
        server = self.tracer.start_span(
            method, context=parent, kind=SpanKind.SERVER, attributes=attributes
        )
        continued = trace.get_current_span(parent).get_span_context().is_valid
        return RequestTrace(self.tracer, server, continued=continued)

    def shutdown(self) -> None:
        """Send what is left and stop the exporter (at server close; blocks up to about
        ``EXPORT_TIMEOUT`` when the collector is down: call it off the event loop)."""
        if self.provider is not None:
            self.provider.shutdown()
            self.provider, self.tracer = None, None


def request_id(request: RequestTrace) -> str:
    """The request id given to a request whose client sent none: its trace id, and (when
    the trace is the caller's, shared by its other calls) the server span's id."""
    if not request.continued:
        return f"req_{request.trace_id}"
    return f"req_{request.trace_id}-{request.span_id}"


def traceparent(request: RequestTrace) -> str:
    """The W3C ``traceparent`` of the request's server span (answered to the client)."""
    flags = request.server.get_span_context().trace_flags
    return f"00-{request.trace_id}-{request.span_id}-{flags:02x}"


def close_request(
    request: RequestTrace, record: RequestRecord, ended_ns: int, route: str | None
) -> None:
    """End the request's spans from its record: the model-call spans that end with it (its
    usage, finish reason, time to first chunk, failure), then the server span."""
    for model_span in request.until_end:
        end_model_call(model_span, record, ended_ns)
    server = request.server
    if route:
        server.update_name(f"{record.method} {route}")
        server.set_attribute("http.route", route)
    server.set_attribute("http.response.status_code", record.http_status)
    if record.key_name is not None:
        server.set_attribute("ocak.key_name", record.key_name)
    if record.model is not None:
        server.set_attribute("ocak.model", record.model)
    server.set_attribute("ocak.status", record.status)
    if record.http_status >= 500:
        kind = record.error_code or str(record.http_status)
        server.set_attribute(genai.ERROR_TYPE, kind)
        server.set_status(Status(StatusCode.ERROR, kind))
    server.end(end_time=ended_ns)


def end_model_call(span: Span, record: RequestRecord, ended_ns: int) -> None:
    """A model call's span (``chat {model}``) ended with its request's figures."""
    span.set_attributes(
        genai.usage_attributes(record.prompt_tokens, record.completion_tokens, record.finish_reason)
    )
    if record.ttft is not None:
        span.set_attribute(genai.TIME_TO_FIRST_CHUNK, round(record.ttft, 6))
    if record.prompt is not None:
        span.set_attribute("ocak.prompt", record.prompt)
    span.set_attribute("ocak.status", record.status)
    if record.status in ("failed", "rejected"):
        kind = record.error_code or str(record.http_status)
        span.set_attribute(genai.ERROR_TYPE, kind)
        span.set_status(Status(StatusCode.ERROR, kind))
    span.end(end_time=ended_ns)
