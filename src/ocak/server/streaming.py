"""The one streaming path: engine events to SSE frames, or collected into a response.

A generation is *primed* (its first event awaited) before any HTTP status is
sent, so admission errors still get their own status code. A non-streaming
response is the same stream collected, cancelled if the client leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from starlette.requests import Request

from ocak.errors import OcakError
from ocak.protocol.generation import GenerationEvent

T = TypeVar("T")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DONE = b"data: [DONE]\n\n"


class ClientDisconnected(Exception):
    """The client went away before its response was complete."""


async def _wait_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Run ``work`` but cancel it as soon as the client disconnects."""
    task: asyncio.Task[T] = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if not task.done() or task.cancelled():
        raise ClientDisconnected()
    return task.result()


def sse(payload: dict[str, Any] | str) -> bytes:
    data = (
        payload
        if isinstance(payload, str)
        else json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    )
    return f"data: {data}\n\n".encode()


def sse_error(exc: OcakError) -> bytes:
    """A mid-stream failure, in the shape OpenAI's clients raise as an APIError."""
    return sse(exc.to_dict())


FrameMaker = Callable[[GenerationEvent], list[bytes]]
