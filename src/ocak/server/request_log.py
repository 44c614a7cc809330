"""One JSON log line per request, with its id; content only when the operator asks.

The line carries who (key name, never the key), what (model, backend, path),
and how it went (status, tokens, time to first token, duration). Headers are
never logged, so neither are keys nor ``Authorization``. With ``log_content``
the request body and the response text (for streams, the generated text put
together from the SSE frames) are added, each cut at ``CONTENT_LIMIT`` bytes.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ocak.protocol.record import RequestRecord

log = logging.getLogger("ocak.access")
CONTENT_LIMIT = 16 * 1024
STREAM_LIMIT = 1024 * 1024  # SSE bytes kept to rebuild a stream's text
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


def _sse_text(body: bytes) -> str:
    """The generated text of an SSE stream of chat or completion chunks."""
    pieces: list[str] = []
    for line in body.split(b"\n"):
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        try:
            payload = json.loads(line[6:])
        except ValueError:
            continue
        for choice in payload.get("choices") or []:
            delta = choice.get("delta") or {}
            text = delta.get("content") if isinstance(delta, dict) else None
            if text is None:
                text = choice.get("text")
            if isinstance(text, str):
                pieces.append(text)
    return "".join(pieces)


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
    """Keep the request body and response text of model calls on the record (opt-in)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        record: RequestRecord | None = scope.get("state", {}).get("record")
        if scope["type"] != "http" or record is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        request = bytearray()
        response = bytearray()
        streaming = False
        content_type = next((v for k, v in scope["headers"] if k == b"content-type"), b"")

        async def capture_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(request) < CONTENT_LIMIT:
                request.extend(message.get("body", b"")[: CONTENT_LIMIT - len(request)])
            return message

        async def capture_send(message: Message) -> None:
            nonlocal streaming
            if message["type"] == "http.response.start":
                streaming = any(
                    k == b"content-type" and v.startswith(b"text/event-stream")
                    for k, v in message.get("headers", [])
                )
            elif message["type"] == "http.response.body":
                if len(response) < (STREAM_LIMIT if streaming else CONTENT_LIMIT):
                    response.extend(message.get("body", b""))
                body = message.get("body", b"")
                if not message.get("more_body", False) or body.endswith(b"data: [DONE]\n\n"):
                    text = _sse_text(bytes(response)) if streaming else _decode(bytes(response))
                    if isinstance(text, str):
                        text = text[:CONTENT_LIMIT]
                    asked = _request_content(bytes(request), content_type)
                    record.content = {"request": asked, "response": text}
            await send(message)

        await self.app(scope, capture_receive, capture_send)
