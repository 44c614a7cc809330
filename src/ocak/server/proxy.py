"""The HTTP side of serving: a call's context from the request, and a remote answer
passed through as the upstream sent it.

The serving layer (``ocak.serving``) picks and primes the target; the routes
render a local stream themselves, and ``upstream_response`` returns a provider's
JSON or forwards its stream. The response's headers say which target served it
(``x-ocak-backend``) and where it ran (``x-ocak-locality``).

A remote stream is forwarded chunk by chunk with the upstream's own bytes.
ocak asked for usage; the usage chunk is dropped when the client did not ask
for it. A failure once chunks have gone out ends the stream with an error event.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import Response, StreamingResponse
from starlette.requests import Request

from ocak.errors import OcakError
from ocak.gateway.router import Served
from ocak.protocol.record import RequestRecord
from ocak.providers.base import (
    BACKEND,
    LOCALITY,
    REQUIRE_LOCALITY,
    SESSION,
    Upstream,
    UpstreamReply,
    UpstreamStream,
)
from ocak.server.auth import get_key
from ocak.server.streaming import DONE, SSE_HEADERS, sse_error
from ocak.server.tracking import get_record
from ocak.serving.context import CallContext


def http_context(request: Request) -> CallContext:
    """The serving layer's view of an HTTP call: its record, key and locality demand."""
    asked = request.headers.get(REQUIRE_LOCALITY, "").strip().lower() == "local"
    session = request.headers.get(SESSION, "").strip()[:200] or None
    return CallContext(get_record(request), get_key(request), asked_local=asked, session=session)


def served_headers(served: Served[Any]) -> dict[str, str]:
    return {BACKEND: served.target.name, LOCALITY: served.locality}


def record_headers(record: RequestRecord) -> dict[str, str]:
    """Which target served and where it ran, from the request's record (the audio and
    embedding answers, which have no ``Served``)."""
    return {BACKEND: record.backend or "", LOCALITY: record.locality or "local"}


def _count(record: RequestRecord, usage: Any) -> None:
    if isinstance(usage, dict):
        record.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        record.completion_tokens = int(usage.get("completion_tokens") or 0)


def upstream_response(
    upstream: Upstream, record: RequestRecord, include_usage: bool, headers: dict[str, str]
) -> Response:
    """The upstream's answer as ocak's response: its own JSON, or its stream forwarded."""
    if isinstance(upstream, UpstreamReply):
        record.first_token()
        _count(record, upstream.data.get("usage"))
        choices = upstream.data.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            record.finish_reason = choices[0].get("finish_reason")
        return Response(upstream.raw, media_type="application/json", headers=headers)
    return StreamingResponse(
        forward(upstream, record, include_usage),
        media_type="text/event-stream",
        headers={**SSE_HEADERS, **headers},
    )


async def forward(
    upstream: UpstreamStream, record: RequestRecord, include_usage: bool
) -> AsyncIterator[bytes]:
    """The upstream's chunks as SSE frames, as they arrive (what one read brought goes out in
    one write); usage counted, and dropped when the client did not ask for it; a failure
    becomes an error event."""
    try:
        async for batch in upstream.batches():
            frames: list[bytes] = []
            for chunk in batch.chunks:
                data = chunk.data
                raw = chunk.raw
                usage = data.get("usage")
                choices = data.get("choices")
                if usage:
                    _count(record, usage)
                    if not include_usage:
                        if not choices:
                            continue  # the usage chunk ocak asked for on its own account
                        stripped = dict(data)
                        del stripped["usage"]
                        raw = json.dumps(stripped, ensure_ascii=False).encode()
                if choices and isinstance(choices[0], dict):
                    first = choices[0]
                    if record.first_token_at is None:
                        delta = first.get("delta")
                        if first.get("text") or (
                            isinstance(delta, dict)
                            and (delta.get("content") or delta.get("tool_calls"))
                        ):
                            record.first_token()
                    if first.get("finish_reason"):
                        record.finish_reason = first["finish_reason"]
                frames.append(b"data: " + raw + b"\n\n")
            if batch.last:
                record.first_token()
                frames.append(DONE)  # the record is complete: sinks run before this write
                yield b"".join(frames)
                return
            if frames:
                yield b"".join(frames)
    except OcakError as exc:
        record.fail(exc.status, exc.code)
        yield sse_error(exc)
        return
    record.first_token()
    yield DONE
