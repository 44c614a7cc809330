"""Generations in progress by KoboldCpp ``genkey``: the text so far and a way to stop them.

KoboldCpp's clients poll ``/api/extra/generate/check`` for the text of a running
generation and stop one with ``/api/extra/abort``. Each generation runs as a task
that pumps the engine's events into its ``Running`` entry (and, when streaming,
into a queue); aborting cancels that task, which closes the engine's event
iterator, so the engine stops decoding at its next step. An entry is visible
only to the key that started it (with keys off, to everyone), and leaves the
registry when its generation ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field

from ocak.engines.stream import Primed
from ocak.errors import InvalidRequest, OcakError
from ocak.protocol.generation import Finished, TextDelta

# What a streaming reader gets: text, the error that ended the generation, or None (the end).
Item = str | OcakError | None


@dataclass(slots=True)
class Running:
    """One generation: who started it, its text so far, how it ended."""

    genkey: str
    owner: int | None
    parts: list[str] = field(default_factory=list)
    queue: asyncio.Queue[Item] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None
    finished: Finished | None = None
    aborted: bool = False
    keep_stop: bool = False  # KoboldCpp's trim_stop false: the matched stop ends the text

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def abort(self) -> None:
        self.aborted = True
        if self.task is not None and not self.task.done():
            self.task.cancel()

    async def pump(self, primed: Primed) -> None:
        """Read the generation to its end (or until aborted); errors go to the queue."""
        events = primed.events()
        try:
            async for event in events:
                if isinstance(event, TextDelta):
                    self.parts.append(event.text)
                    self.queue.put_nowait(event.text)
                elif isinstance(event, Finished):
                    if self.keep_stop and event.stop_sequence:
                        self.parts.append(event.stop_sequence)
                        self.queue.put_nowait(event.stop_sequence)
                    self.finished = event
        except OcakError as exc:
            self.queue.put_nowait(exc)
            raise
        finally:
            with contextlib.suppress(Exception):
                await events.aclose()  # type: ignore[attr-defined]
            self.queue.put_nowait(None)


class Generations:
    """The running generations, by genkey (built with the app's services)."""

    def __init__(self) -> None:
        self._by_key: dict[str, Running] = {}

    def start(
        self, genkey: str | None, owner: int | None, primed: Primed, *, keep_stop: bool = False
    ) -> Running:
        """Register and start pumping a generation; a genkey already running is a 400."""
        key = genkey or f"KCPP{uuid.uuid4().hex[:8]}"
        if key in self._by_key:
            raise InvalidRequest(
                f"A generation with genkey '{key}' is already running.", param="genkey"
            )
        run = Running(key, owner, keep_stop=keep_stop)
        self._by_key[key] = run
        run.task = asyncio.ensure_future(run.pump(primed))
        run.task.add_done_callback(lambda _: self._forget(run))
        return run

    def _forget(self, run: Running) -> None:
        if self._by_key.get(run.genkey) is run:
            del self._by_key[run.genkey]

    def find(self, genkey: str | None, owner: int | None) -> Running | None:
        """The caller's generation with that genkey (with none: its only one)."""
        mine = [r for r in self._by_key.values() if r.owner == owner]
        if genkey:
            return next((r for r in mine if r.genkey == genkey), None)
        return mine[0] if len(mine) == 1 else None

    def abort(self, genkey: str | None, owner: int | None) -> int:
        """Stop the caller's generation with that genkey, or with none all of the caller's
        (as KoboldCpp, which runs one at a time, stops its one); how many were stopped."""
        runs = [r for r in self._by_key.values() if r.owner == owner]
        if genkey:
            runs = [r for r in runs if r.genkey == genkey]
        for run in runs:
            run.abort()
        return len(runs)

    def __len__(self) -> int:
        return len(self._by_key)
