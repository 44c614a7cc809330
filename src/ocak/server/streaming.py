"""The one streaming path: engine events to SSE frames, or collected into a response.

A generation is *primed* (its first event awaited) before any HTTP status is
sent, so admission errors still get their own status code. A non-streaming
response is the same stream collected, cancelled if the client leaves.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.requests import Request

from ocak.errors import OcakError
from ocak.protocol.generation import Finished, GenerationEvent, TextDelta

T = TypeVar("T")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DONE = b"data: [DONE]\n\n"


class ClientDisconnected(Exception):
    """The client went away before its response was complete."""


@dataclass(slots=True)
class Primed:
    """A generation whose first event has arrived."""

    first: GenerationEvent
    rest: AsyncIterator[GenerationEvent]

    async def events(self) -> AsyncIterator[GenerationEvent]:
        try:
            yield self.first
            async for event in self.rest:
                yield event
        finally:
            await aclose(self.rest)


async def aclose(it: AsyncIterator[Any]) -> None:
    close = getattr(it, "aclose", None)
    if close is not None:
        await close()


async def prime(events: AsyncIterator[GenerationEvent]) -> Primed:
    """Wait for the first event; admission errors raise here, before any byte is sent."""
    try:
        first = await anext(events)
    except BaseException:
        await aclose(events)
        raise
    return Primed(first, events)


@dataclass(slots=True)
class Collected:
    text: str
    finished: Finished


async def collect(primed: Primed) -> Collected:
    pieces: list[str] = []
    async for event in primed.events():
        if isinstance(event, TextDelta):
            pieces.append(event.text)
        else:
            return Collected("".join(pieces), event)
    raise OcakError("the engine ended a generation without a finish event")


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
            try:
                await task
            except BaseException:
                pass
    if not task.done() or task.cancelled():
        raise ClientDisconnected()
    return task.result()


def sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


def sse_error(exc: OcakError) -> bytes:
    """A mid-stream failure, in the shape OpenAI's clients raise as an APIError."""
    return sse(exc.to_dict())


FrameMaker = Callable[[GenerationEvent], list[bytes]]
