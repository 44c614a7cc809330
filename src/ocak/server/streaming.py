"""The one streaming path: engine events to SSE frames, or collected into a response.

A generation is *primed* (its first event awaited) before any HTTP status is
sent, so admission errors still get their own status code. A non-streaming
response is the same stream collected, cancelled if the client leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.requests import Request

from ocak.errors import OcakError
from ocak.protocol.generation import Finished, GenerationEvent, TextDelta, ToolCallDelta
from ocak.server.tracking import RequestRecord

T = TypeVar("T")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DONE = b"data: [DONE]\n\n"


class ClientDisconnected(Exception):
    """The client went away before its response was complete."""


@dataclass(slots=True)
class Primed:
    """A generation whose first event has arrived; its events fill the request record."""

    first: GenerationEvent
    rest: AsyncIterator[GenerationEvent]
    record: RequestRecord | None = None

    async def events(self) -> AsyncIterator[GenerationEvent]:
        record = self.record
        finished = False
        try:
            yield self._track(self.first)
            async for event in self.rest:
                yield self._track(event)
            finished = True
        except OcakError as exc:
            if record is not None:
                record.fail(exc.status, exc.code)
            raise
        finally:
            # A consumer that stops at the Finished event (collect) ends here too: not a cancel.
            ended = finished or (record is not None and record.finish_reason is not None)
            if not ended and record is not None and record.status == "completed":
                record.status = "cancelled"
            await aclose(self.rest)

    def _track(self, event: GenerationEvent) -> GenerationEvent:
        record = self.record
        if record is not None:
            if isinstance(event, TextDelta | ToolCallDelta):
                record.first_token()
            elif isinstance(event, Finished):
                record.first_token()
                record.prompt_tokens = event.usage.prompt_tokens
                record.completion_tokens = event.usage.completion_tokens
                record.finish_reason = event.reason
        return event


async def aclose(it: AsyncIterator[Any]) -> None:
    close = getattr(it, "aclose", None)
    if close is not None:
        await close()


async def prime(
    events: AsyncIterator[GenerationEvent], record: RequestRecord | None = None
) -> Primed:
    """Wait for the first event; admission errors raise here, before any byte is sent."""
    try:
        first = await anext(events)
    except BaseException:
        await aclose(events)
        raise
    return Primed(first, events, record)


@dataclass(slots=True)
class CollectedCall:
    id: str
    name: str
    arguments: str


@dataclass(slots=True)
class Collected:
    text: str
    finished: Finished
    tool_calls: list[CollectedCall]


async def collect(primed: Primed) -> Collected:
    """The stream gathered into one answer (text, tool calls, finish)."""
    pieces: list[str] = []
    calls: list[CollectedCall] = []
    async for event in primed.events():
        if isinstance(event, TextDelta):
            pieces.append(event.text)
        elif isinstance(event, ToolCallDelta):
            if event.id is not None:
                calls.append(CollectedCall(event.id, event.name or "", ""))
            calls[event.index].arguments += event.arguments
        else:
            return Collected("".join(pieces), event, calls)
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
