"""What engines whose decoding runs in a thread of their own share.

The context budget check, the queue-full error, the bridge that turns events
pushed from the decode thread into an async iterator that cancels its job when
the consumer leaves, and ``ThreadedEngine``: loading, templating, tokenizing,
stats and closing for both the llama.cpp and the CTranslate2 engine.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from ocak.engines.base import Engine, EngineStats, ModelInfo
from ocak.engines.chat_template import ChatTemplate
from ocak.errors import (
    ContextLengthExceeded,
    EngineError,
    InvalidRequest,
    OcakError,
    QueueFull,
    Unavailable,
)
from ocak.protocol.generation import Finished, GenerationRequest, TextDelta

Event = TextDelta | Finished | OcakError
Emit = Callable[[Event], None]
J = TypeVar("J")


def completion_budget(
    prompt_tokens: int, requested: int | None, context: int, soft: int | None = None
) -> int:
    """Tokens the answer may use: ``requested`` if it fits, else the rest of the window
    (or ``soft``, the server's default, where that is less).

    Raises ``ContextLengthExceeded`` (with both numbers) rather than truncating.
    """
    room = context - prompt_tokens
    if requested is None:
        requested = None if soft is None else min(soft, max(room, 1))
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


class LoadedModel(Protocol):
    """What a threaded engine needs of its loaded model (llama.cpp's, CTranslate2's)."""

    chat_template: ChatTemplate
    quantization: str | None
    size_bytes: int

    @property
    def start_token(self) -> int | None:
        """The token an empty prompt starts with (BOS), or None when the model has none."""

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]: ...

    def detokenize(self, ids: list[int]) -> str:
        """The text of ``ids`` (special tokens written out); 400 for an unknown id."""

    def close(self) -> None: ...


class DecodeScheduler(Protocol):
    """What a threaded engine needs of its scheduler (the decode thread's owner)."""

    def stats(self) -> EngineStats: ...

    def close(self) -> None: ...


M = TypeVar("M", bound=LoadedModel)
S = TypeVar("S", bound=DecodeScheduler)
log = logging.getLogger("ocak.engines")


class ThreadedEngine(Engine, Generic[M, S]):
    """Loading off the event loop, templating, tokenizing, stats and closing, once for the
    engines whose decoding runs in a thread (subclasses build the model and scheduler)."""

    def __init__(self, model_id: str, path: Path, *, ctx_size: int, queue_timeout: float) -> None:
        super().__init__(model_id)
        self.path = path
        self.ctx_size = ctx_size
        self.queue_timeout = queue_timeout
        self.model: M | None = None
        self.scheduler: S | None = None

    def _load(self) -> tuple[M, S]:
        """Build the model and its scheduler (runs in a worker thread)."""
        raise NotImplementedError

    def info_extra(self) -> dict[str, Any]:
        return {}

    async def load(self) -> None:
        try:
            self.model, self.scheduler = await asyncio.to_thread(self._load)
        except OcakError as exc:
            self.state, self.error = "error", exc.message
            return
        self.state = "ready"

    def warn_context(self, trained: int) -> None:
        """A ``--ctx-size`` past what the model was trained for works, but worse: say so."""
        if trained and self.ctx_size > trained:
            log.warning(
                "%s: --ctx-size %d is larger than the model was trained for (%d)",
                self.model_id,
                self.ctx_size,
                trained,
            )

    def info(self) -> ModelInfo:
        return ModelInfo(
            id=self.model_id,
            engine=self.kind,
            path=str(self.path),
            context_length=self.ctx_size,
            quantization=self.model.quantization if self.model else None,
            size_bytes=self.model.size_bytes if self.model else None,
            extra=self.info_extra(),
        )

    def stats(self) -> EngineStats:
        return self.scheduler.stats() if self.scheduler else EngineStats()

    def ready(self) -> tuple[M, S]:
        if self.model is None or self.scheduler is None:
            raise EngineError(f"model {self.model_id} is not loaded")
        return self.model, self.scheduler

    def count_tokens(self, text: str) -> int:
        return len(self.ready()[0].tokenize(text, add_special=False))

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        return self.ready()[0].tokenize(text, add_special=add_special)

    def detokenize(self, ids: list[int]) -> str:
        return self.ready()[0].detokenize(ids)

    def render(self, request: GenerationRequest) -> str:
        """The prompt text: the chat template applied to messages, or the raw prompt."""
        model = self.ready()[0]
        if request.messages is not None:
            return model.chat_template.render(request.messages, tools=request.tools)
        return request.prompt or ""

    def prompt_tokens(self, request: GenerationRequest) -> list[int]:
        model = self.ready()[0]
        tokens = model.tokenize(self.render(request))
        if not tokens:
            if model.start_token is None:
                raise InvalidRequest("The prompt is empty.", param="prompt")
            tokens = [model.start_token]
        return tokens

    def deadline(self, request: GenerationRequest) -> float:
        """When a request waiting for a sequence gives up (503)."""
        return time.monotonic() + (request.queue_timeout or self.queue_timeout)

    async def close(self) -> None:
        scheduler, model = self.scheduler, self.model
        self.scheduler, self.model = None, None
        if scheduler is not None:
            await asyncio.to_thread(scheduler.close)
        if model is not None:
            model.close()
        self.state = "closed"


class QueuedJob(Protocol):
    """A job a decode thread runs: it can be cancelled and it emits its events."""

    cancelled: bool

    def emit(self, event: Event) -> None: ...


Q = TypeVar("Q", bound=QueuedJob)


class JobQueue(Generic[Q]):
    """The waiting queue and its lock, with the submit, cancel and stats every scheduler
    offers the event loop; a scheduler says how many jobs run and how many may."""

    def __init__(self, max_queue: int) -> None:
        self.max_queue = max_queue
        self.waiting: collections.deque[Q] = collections.deque()
        self.cond = threading.Condition()
        self.running = True

    def running_jobs(self) -> int:
        """Jobs decoding now (called with ``cond`` held)."""
        raise NotImplementedError

    def capacity(self) -> int:
        """Jobs that may decode at once."""
        raise NotImplementedError

    def submit(self, job: Q) -> None:
        """Queue a job; 503 while shutting down, 429 when the queue is full."""
        with self.cond:
            if not self.running:
                raise Unavailable("The engine is shutting down.")
            running = self.running_jobs()
            if running + len(self.waiting) >= self.capacity() + self.max_queue:
                raise queue_full(running, len(self.waiting), self.max_queue)
            self.waiting.append(job)
            self.cond.notify()

    def cancel(self, job: Q) -> None:
        """Stop a job: dropped from the queue, or stopped before its next step."""
        job.cancelled = True
        with self.cond:
            self.cond.notify()

    def stats(self) -> EngineStats:
        with self.cond:
            return EngineStats(
                active=self.running_jobs(), queued=len(self.waiting), slots=self.capacity()
            )

    def stop_accepting(self) -> list[Q]:
        """Refuse new jobs and take the waiting ones out (call with ``cond`` held)."""
        self.running = False
        self.cond.notify_all()
        waiting, self.waiting = list(self.waiting), collections.deque()
        return waiting

    @staticmethod
    def refuse(jobs: list[Q]) -> None:
        for job in jobs:
            job.emit(Unavailable("The engine shut down before this request ran."))
