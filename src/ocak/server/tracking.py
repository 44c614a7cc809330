"""One record per request, filled as it runs and handed to sinks when it ends.

``RequestTracking`` (pure ASGI) gives every request an id (``x-request-id``,
taken from the client or generated, and returned), a ``RequestRecord`` in
``request.state.record`` that routes fill in (model, backend, tokens, time to
first token), and runs the app's record sinks (the usage store, the key's
token charge) *before* the last byte of the response is sent, so a response
that has ended always has its record. The late sinks (metrics, the request log
line) run right after that byte, off the response's latency; still before the
event loop takes the client's next request.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ocak.protocol.record import RequestRecord, Sink, run_sinks

log = logging.getLogger("ocak.requests")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_DONE = b"data: [DONE]\n\n"


def get_record(request: Request) -> RequestRecord:
    record: RequestRecord = request.state.record
    return record


class RequestTracking:
    """Assign request ids, track each request, and run sinks before the response ends."""

    def __init__(self, app: ASGIApp, sinks: list[Sink], late_sinks: list[Sink]) -> None:
        self.app = app
        self.sinks = sinks
        self.late_sinks = late_sinks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"").decode(
            "latin-1"
        )
        request_id = given if _REQUEST_ID.match(given) else f"req_{uuid.uuid4().hex[:20]}"
        record = RequestRecord(request_id, scope["method"], scope["path"])
        scope.setdefault("state", {})["record"] = record
        done = late_done = False

        def finish() -> None:
            nonlocal done
            if done:
                return
            done = True
            record.ended = time.monotonic()
            run_sinks(self.sinks, record)

        def late() -> None:
            nonlocal late_done
            if not late_done:
                late_done = True
                run_sinks(self.late_sinks, record)

        async def tracked_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.http_status = message["status"]
                if message["status"] >= 400 and record.status == "completed":
                    record.fail(message["status"], None)
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message = {**message, "headers": headers}
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
