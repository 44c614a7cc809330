"""What engines whose decoding runs in a thread of their own share.

The context budget check, the queue-full error, and the bridge that turns
events pushed from the decode thread into an async iterator that cancels its
job when the consumer leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from ocak.errors import ContextLengthExceeded, OcakError, QueueFull
from ocak.protocol.generation import Finished, TextDelta

Event = TextDelta | Finished | OcakError
Emit = Callable[[Event], None]
J = TypeVar("J")


def completion_budget(prompt_tokens: int, requested: int | None, context: int) -> int:
    """Tokens the answer may use: ``requested`` if it fits, else the rest of the window.

    Raises ``ContextLengthExceeded`` (with both numbers) rather than truncating.
    """
    room = context - prompt_tokens
    budget = room if requested is None else requested
    if budget < 1 or budget > room:
        raise ContextLengthExceeded(
            prompt_tokens=prompt_tokens, max_tokens=max(budget, 1), context=context
        )
    return budget


def queue_full(running: int, waiting: int, max_queue: int) -> QueueFull:
    return QueueFull(
        f"The server is busy: {running} requests are running and {waiting} are waiting "
        f"(--max-queue {max_queue}). Retry shortly.",
        retry_after=1.0,
    )


async def bridge(
    start: Callable[[Emit], J], cancel: Callable[[J], None]
) -> AsyncIterator[TextDelta | Finished]:
    """Events of a job run by a decode thread, as an async iterator.

    ``start(emit)`` submits the job (raising admission errors) and returns it;
    the thread calls ``emit`` with text, then ``Finished`` or an ``OcakError``.
    Leaving early (a client that disconnected) calls ``cancel(job)``.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Event] = asyncio.Queue()

    def emit(event: Event) -> None:
        # RuntimeError: the loop is gone (shutdown), nobody is listening.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(queue.put_nowait, event)

    job = start(emit)
    done = False
    try:
        while True:
            event = await queue.get()
            if isinstance(event, OcakError):
                done = True
                raise event
            done = isinstance(event, Finished)
            yield event
            if done:
                return
    finally:
        if not done:
            cancel(job)
