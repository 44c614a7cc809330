"""A pull from the Hugging Face Hub run for an HTTP route: ``/v1/models/pull`` and
Ollama's ``/api/pull`` share it and differ only in how they write its progress.

The pull runs in a worker thread (``models/hub.py``) as a task the app holds, so a
client that leaves does not stop it: the next pull of the same name finds the model,
or resumes. Its progress arrives in a queue, throttled per file.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from ocak.models.hub import Hub, HubRef, Progress, pull
from ocak.models.manifest import Manifest
from ocak.models.store import ModelStore
from ocak.server.services import Services

_EVERY = 0.25  # seconds between two progress events of one file


def _event(p: Progress) -> dict[str, Any]:
    event: dict[str, Any] = {"status": p.stage}
    if p.file is not None:
        event.update(file=p.file, completed=p.completed, total=p.total)
    if p.detail:
        event["detail"] = p.detail
    return event


class Pull:
    """One pull under way: its task (the manifest at the end) and its progress events."""

    def __init__(self, state: Services, ref: HubRef, base: str | None = None) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Future[Manifest] = asyncio.ensure_future(self._run(state, ref, base))
        state.background.add(self.task)  # held: the pull goes on if the client leaves
        self.task.add_done_callback(state.background.discard)

    async def _run(self, state: Services, ref: HubRef, base: str | None) -> Manifest:
        loop = asyncio.get_running_loop()
        last: dict[str | None, float] = {}

        def report(p: Progress) -> None:
            now = time.monotonic()
            done = p.total is not None and p.completed >= p.total
            if p.stage == "downloading" and not done and now - last.get(p.file, 0.0) < _EVERY:
                return
            last[p.file] = now
            loop.call_soon_threadsafe(self.queue.put_nowait, _event(p))

        store = ModelStore(state.settings.model_dir)
        hub = Hub(state.settings.hf_endpoint)
        return await asyncio.to_thread(pull, ref, store, hub, report=report, base=base)

    async def result(self) -> Manifest:
        """The manifest once pulled (the pull goes on if the caller is cancelled)."""
        return await asyncio.shield(self.task)

    async def resolved(self) -> list[dict[str, Any]]:
        """The events up to the first past resolving, raising the pull's error if it failed
        by then (no such repo, no network): a route can still answer with its own status."""
        first = [event async for event in self.events(until_resolved=True)]
        if self.task.done() and self.task.exception() is not None:
            raise self.task.exception()  # type: ignore[misc]
        return first

    async def events(self, until_resolved: bool = False) -> AsyncIterator[dict[str, Any]]:
        """Progress events as they come, until the pull ends (or, with ``until_resolved``,
        until the first event past resolving); the final success is left to the caller."""
        while not self.task.done() or not self.queue.empty():
            getter: asyncio.Future[Any] = asyncio.ensure_future(self.queue.get())
            waiting: set[asyncio.Future[Any]] = {getter, self.task}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                continue
            event = getter.result()
            if event["status"] != "success":
                yield event
            if until_resolved and event["status"] != "resolving":
                return
