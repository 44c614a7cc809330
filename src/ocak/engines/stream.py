"""An engine's event stream, primed: its first event awaited before anything is answered.

Every caller of an engine (HTTP, gRPC, the gateway's fallback, characters)
primes the generation first, so admission errors (model loading, queue full,
a prompt too long) raise before any status or byte goes out, and the gateway
can still fall back. The primed stream fills the request record as it runs;
``collect`` gathers it into one answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from ocak.errors import OcakError
from ocak.protocol.generation import Finished, GenerationEvent, TextDelta, ToolCallDelta
from ocak.protocol.record import RequestRecord


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
                # Each delta is at least one token: a stream the client leaves is still
                # charged what it was sent (Finished replaces this with the exact count).
                record.completion_tokens += 1
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
