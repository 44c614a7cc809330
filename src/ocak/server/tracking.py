"""One record per request, filled as it runs and handed to sinks when it ends.

``RequestTracking`` (pure ASGI) gives every request an id (``x-request-id``,
taken from the client or generated, and returned), a ``RequestRecord`` in
``request.state.record`` that routes fill in (model, backend, tokens, time to
first token), and runs the app's record sinks (the usage store, the key's
token charge) *before* the last byte of the response is sent, so a response
that has ended always has its record. The late sinks (metrics, the request log
line) run right after that byte, off the response's latency; still before the
event loop takes the client's next request.

With tracing on (``otlp_endpoint``), each request is also a server span (continuing
the client's W3C ``traceparent``), current while the app runs so every layer's spans
are its children; the record, and so the log line, carries its trace id, the response
a ``traceparent`` header, and a request id ocak makes is ``req_<trace id>``
(docs/tracing.md). The spans end, from the record, with the late sinks.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from opentelemetry import context as otel_context
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ocak.protocol.record import RequestRecord, Sink, run_sinks
from ocak.telemetry import RequestTrace, Tracing
from ocak.telemetry.tracing import close_request, request_id, traceparent

log = logging.getLogger("ocak.requests")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_DONE = b"data: [DONE]\n\n"
# Probes are not traced: a load balancer's /health every few seconds would bury the traces.
UNTRACED = frozenset({"/health", "/metrics"})


def get_record(request: Request) -> RequestRecord:
    record: RequestRecord = request.state.record
    return record


class RequestTracking:
    """Assign request ids, track each request, and run sinks before the response ends."""

    def __init__(
        self,
        app: ASGIApp,
        sinks: list[Sink],
        late_sinks: list[Sink],
        tracing: Tracing | None = None,
    ) -> None:
        self.app = app
        self.sinks = sinks
        self.late_sinks = late_sinks
        self.tracing = tracing or Tracing()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"").decode(
            "latin-1"
        )
        traced = None
        if self.tracing.enabled and scope["path"] not in UNTRACED:
            traced = self.start_trace(scope)
        if _REQUEST_ID.match(given):
            rid = given
        elif traced is not None:
            rid = request_id(traced)
        else:
            rid = f"req_{uuid.uuid4().hex[:20]}"
        record = RequestRecord(rid, scope["method"], scope["path"])
        scope.setdefault("state", {})["record"] = record
        answer = [(b"x-request-id", rid.encode("latin-1"))]
        token = None
        if traced is not None:
            record.trace_id = traced.trace_id
            traced.server.set_attribute("ocak.request_id", rid)
            answer.append((b"traceparent", traceparent(traced).encode("latin-1")))
            token = otel_context.attach(traced.context())
        done = late_done = False
        ended_ns = 0

        def finish() -> None:
            nonlocal done, ended_ns
            if done:
                return
            done = True
            record.ended = time.monotonic()
            ended_ns = time.time_ns()
            run_sinks(self.sinks, record)

        def late() -> None:
            nonlocal late_done
            if not late_done:
                late_done = True
                run_sinks(self.late_sinks, record)
                if traced is not None:
                    route = getattr(scope.get("route"), "path", None)
                    try:
                        close_request(traced, record, ended_ns or time.time_ns(), route)
                    except Exception:  # a trace must not break the response
                        log.exception("ending the request's spans failed")

        async def tracked_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.http_status = message["status"]
                if message["status"] >= 400 and record.status == "completed":
                    record.fail(message["status"], None)
                message = {**message, "headers": [*message.get("headers", []), *answer]}
            elif (
                message["type"] == "http.response.body"
                and not done
                and (
                    not message.get("more_body", False) or message.get("body", b"").endswith(_DONE)
                )
            ):
                # An SSE stream has ended for its client at ``data: [DONE]``, before the
                # HTTP body's last (empty) chunk: the record is committed before either.
                finish()
                await send(message)
                late()
                return
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except BaseException:
            if record.status == "completed":
                record.status = "cancelled" if record.first_token_at else "failed"
            raise
        finally:
            if not done:
                # The body never ended: the client left, or the app failed.
                if record.status == "completed":
                    record.status = "cancelled"
                finish()
            late()  # also when sending the last byte failed
            if token is not None:
                otel_context.detach(token)

    def start_trace(self, scope: Scope) -> RequestTrace:
        """The request's server span, a child of the client's ``traceparent`` if valid."""
        parent = next((v for k, v in scope["headers"] if k == b"traceparent"), b"")
        attributes = {
            "http.request.method": scope["method"],
            "url.path": scope["path"],
            "url.scheme": scope.get("scheme", "http"),
            "network.protocol.version": scope.get("http_version", "1.1"),
        }
        return self.tracing.start_request(
            scope["method"], attributes, parent.decode("latin-1") or None
        )
