"""Server-sent events read from an upstream, one event as soon as its blank line arrives."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One event: its type (``message`` unless named) and its data lines joined by newlines."""

    event: str
    data: bytes


def _parse(block: bytes) -> SseEvent | None:
    event = "message"
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
        elif line.startswith(b"event:"):
            event = line[6:].strip().decode("utf-8", "replace")
        # comments (": keep-alive"), id: and retry: are not forwarded
    if not data:
        return None
    return SseEvent(event, data[0] if len(data) == 1 else b"\n".join(data))


async def sse_batches(chunks: AsyncIterator[bytes]) -> AsyncIterator[list[SseEvent]]:
    """The events of an SSE body, as soon as each read completes them: one list per read
    (what arrived together is handed on together, nothing waits for more bytes).

    An event cut off by the end of the body is not dispatched (as the SSE spec says).
    """
    buffer = b""
    carry = b""
    async for chunk in chunks:
        if carry:
            chunk, carry = carry + chunk, b""
        if b"\r" in chunk:
            if chunk.endswith(b"\r"):  # maybe half of a CRLF: wait for the next byte
                chunk, carry = chunk[:-1], b"\r"
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buffer = buffer + chunk if buffer else chunk
        events: list[SseEvent] = []
        while True:
            end = buffer.find(b"\n\n")
            if end < 0:
                break
            block, buffer = buffer[:end], buffer[end + 2 :]
            parsed = _parse(block)
            if parsed is not None:
                events.append(parsed)
        if events:
            yield events


async def sse_events(chunks: AsyncIterator[bytes]) -> AsyncIterator[SseEvent]:
    """The events of an SSE body one by one (see ``sse_batches``)."""
    async for batch in sse_batches(chunks):
        for event in batch:
            yield event
