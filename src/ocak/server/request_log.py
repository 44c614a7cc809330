"""One JSON log line per request, with its id; content only when the operator asks.

The line carries who (key name, never the key), what (model, backend, path),
and how it went (status, tokens, time to first token, duration), and with tracing on its
OpenTelemetry ``trace_id`` (docs/tracing.md). Headers are
never logged, so neither are keys nor ``Authorization``. With ``log_content``
the request body and the response text (for streams, the generated text put
together from the SSE frames) are added, each cut at ``CONTENT_LIMIT`` bytes. The same
capture keeps chat requests whole for the usage store with ``store_content`` (content.py).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ocak.protocol.record import RequestRecord
from ocak.server.content import ANSWER_LIMIT, STORED_PATHS, AnswerStream, answer_from_json

log = logging.getLogger("ocak.access")
CONTENT_LIMIT = 16 * 1024
_CLIP = 200


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def log_entry(record: RequestRecord, *, content: bool = False) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.started_at))
        + f".{int(record.started_at * 1000) % 1000:03d}Z",
        "event": "request",
        "request_id": record.request_id,
        "method": record.method,
        "path": record.path[:_CLIP],
        "http_status": record.http_status,
        "status": record.status,
        "duration_ms": _ms(record.duration),
    }
    if record.key_name is not None:
        entry["key"] = record.key_name
    if record.is_api:
        entry.update(
            model=(record.model or "")[:_CLIP],
            backend=record.backend,
            locality=record.locality,
            stream=record.stream,
            prompt_tokens=record.prompt_tokens,
            completion_tokens=record.completion_tokens,
            ttft_ms=_ms(record.ttft),
            finish_reason=record.finish_reason,
        )
    if record.error_code:
        entry["error_code"] = record.error_code
    if record.trace_id is not None:  # with tracing on: this request's spans (docs/tracing.md)
        entry["trace_id"] = record.trace_id
    if content and record.content is not None:
        entry["content"] = record.content
    return entry


class RequestLog:
    """Record sink writing the request's JSON line to the ``ocak.access`` logger."""

    def __init__(self, *, log_content: bool = False) -> None:
        self.log_content = log_content

    def __call__(self, record: RequestRecord) -> None:
        if log.isEnabledFor(logging.INFO):
            line = json.dumps(log_entry(record, content=self.log_content), ensure_ascii=False)
            # A path or text with lone surrogates must not break the log stream.
            log.info(line.encode("utf-8", "backslashreplace").decode("utf-8"))


def configure_access_log(stream: TextIO | None = None) -> None:
    """Send ``ocak.access`` lines as bare JSON (one object per line) to stderr."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


def _decode(body: bytes) -> Any:
    text = body[:CONTENT_LIMIT].decode("utf-8", "replace")
    if len(body) <= CONTENT_LIMIT:
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def _request_content(body: bytes, content_type: bytes) -> Any:
    """The request as the log may keep it: never a player's recording (multipart uploads,
    and a session message's base64 ``audio``, are named, not copied)."""
    if content_type.startswith(b"multipart/"):
        return f"[an upload of {len(body)} bytes: audio is not logged]"
    content = _decode(body)
    if isinstance(content, dict) and isinstance(content.get("audio"), dict):
        return {**content, "audio": "[a recording: not logged]"}
    if isinstance(content, str) and '"audio"' in content:
        return f"[{len(body)} bytes with a recording: not logged]"
    return content


class ContentCapture:
    """Keep model calls' requests and answers on the record: clipped, for the log line
    (``log``: ``log_content``); whole, for the usage store (``store``: ``store_content``,
    chat requests only, the request up to ``max_request`` bytes, the answer up to
    ``ANSWER_LIMIT``)."""

    def __init__(
        self, app: ASGIApp, *, log: bool = True, store: bool = False, max_request: int = 0
    ) -> None:
        self.app = app
        self.log = log
        self.store = store
        self.max_request = max_request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        record: RequestRecord | None = scope.get("state", {}).get("record")
        if scope["type"] != "http" or record is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        content_type = next((v for k, v in scope["headers"] if k == b"content-type"), b"")
        keep = (
            self.store
            and scope["path"] in STORED_PATHS
            and not content_type.startswith(b"multipart/")
        )
        if not (self.log or keep):
            await self.app(scope, receive, send)
            return
        request_limit = max(self.max_request, CONTENT_LIMIT) if keep else CONTENT_LIMIT
        answer_limit = ANSWER_LIMIT if keep else CONTENT_LIMIT
        request = bytearray()
        response = bytearray()
        stream: AnswerStream | None = None
        truncated = done = False

        async def capture_receive() -> Message:
            nonlocal truncated
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                room = request_limit - len(request)
                truncated = truncated or len(body) > room
                request.extend(body[: max(room, 0)])
            return message

        async def capture_send(message: Message) -> None:
            nonlocal stream, done
            if message["type"] == "http.response.start":
                if any(
                    k == b"content-type" and v.startswith(b"text/event-stream")
                    for k, v in message.get("headers", [])
                ):
                    stream = AnswerStream(answer_limit)
            elif message["type"] == "http.response.body" and not done:
                body = message.get("body", b"")
                if stream is not None:
                    stream.feed(body)
                elif len(response) <= answer_limit:
                    response.extend(body)
                if not message.get("more_body", False) or body.endswith(b"data: [DONE]\n\n"):
                    done = True  # before the record's sinks run (at this same message)
                    if self.log:
                        text = stream.text if stream is not None else _decode(bytes(response))
                        if isinstance(text, str):
                            text = text[:CONTENT_LIMIT]
                        asked = _request_content(bytes(request[:CONTENT_LIMIT]), content_type)
                        record.content = {"request": asked, "response": text}
                    if keep and not truncated:
                        answer = (
                            stream.answer()
                            if stream is not None
                            else answer_from_json(bytes(response))
                            if len(response) <= answer_limit
                            else None
                        )
                        record.exchange = {"request": bytes(request), "answer": answer}
            await send(message)

        await self.app(scope, capture_receive, capture_send)
