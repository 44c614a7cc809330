"""Batching over CTranslate2's ``generate_batch`` with per-step callbacks.

CTranslate2 decodes a batch with one set of sampling options and has no way to
add a sequence to a running batch. So one scheduler thread groups waiting
requests that can share a batch (same sampling settings, prompts of similar
length, so little of the batch waits on another's prompt) and hands each batch
to one of ``workers`` CTranslate2 workers. The per-step callback streams every
token to its request as it is decoded and stops a sequence when its client
left, a stop string matched, or its own ``max_tokens`` is reached.

Only prompts of the same length share a batch by default ("exact"): CTranslate2
runs the part of a longer prompt past the shortest one token by token, which
changes the numerics, so a greedy answer would depend on its neighbours. The
"similar" policy also batches prompts of close lengths: more batching for mixed
traffic, at the price of that dependence.

A request with its own seed (sampling) cannot share: CTranslate2 seeds its
sampler once per worker thread, so it runs alone on a freshly started worker
seeded for it (see ``Ct2Model.seeded_generator``).

Events go back to the asking coroutine through ``Job.emit`` (thread-safe).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ocak.engines.ctranslate2.model import Ct2Model, release_seed
from ocak.engines.text import StopMatcher
from ocak.engines.threaded import Emit, JobQueue
from ocak.errors import EngineError, OcakError, Unavailable
from ocak.protocol.generation import Finished, FinishReason, TextDelta, Usage

log = logging.getLogger("ocak.ctranslate2")

BatchKey = tuple[Any, ...]
BATCHING = ("exact", "similar")


@dataclass(eq=False)
class Job:
    """One generation as the scheduler sees it."""

    ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: list[str]
    emit: Emit
    deadline: float
    top_k: int = 0
    repeat_penalty: float = 1.0
    cancelled: bool = False
    finished: bool = False
    generated: int = 0
    decoder: Any = None
    stops: StopMatcher | None = None
    arrived: float = field(default_factory=time.monotonic)

    @property
    def key(self) -> BatchKey | None:
        """Requests with equal keys may share a batch; None runs alone."""
        if self.temperature <= 0.0:
            return ("greedy", self.repeat_penalty)
        if self.seed is not None:
            return None
        return ("sample", self.temperature, self.top_p, self.top_k, self.repeat_penalty)


class Scheduler(JobQueue[Job]):
    """Groups jobs into batches and runs them on the model's CTranslate2 workers."""

    def __init__(
        self,
        model: Ct2Model,
        *,
        max_batch: int,
        max_queue: int,
        gather_window: float = 0.05,
        batching: str = "exact",
    ) -> None:
        if batching not in BATCHING:
            raise ValueError(f"batching must be one of {', '.join(BATCHING)}, not {batching!r}")
        super().__init__(max_queue)
        self.model = model
        self.batching = batching
        self.max_batch = max_batch
        self.gather_window = gather_window
        self.workers = model.workers
        self.active: set[Job] = set()
        self.in_flight = 0
        self.batches = 0
        self.released = 0.0
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="ocak-ct2-batch")
        self._thread = threading.Thread(target=self._run, name="ocak-ct2", daemon=True)
        self._thread.start()

    # -- called from the event loop -------------------------------------------------

    def running_jobs(self) -> int:
        return len(self.active)

    def capacity(self) -> int:
        return self.max_batch * self.workers

    def close(self) -> None:
        with self.cond:
            waiting = self.stop_accepting()
            for job in self.active:
                job.cancelled = True  # running batches stop at their next step
        self.refuse(waiting)
        self._thread.join(timeout=30)
        self._pool.shutdown(wait=True)

    # -- the scheduler thread -------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self.cond:
                while self.running and (not self.waiting or self.in_flight >= self.workers):
                    self.cond.wait()
                if not self.running:
                    return
                self._drop_dead()
                if not self.waiting:
                    continue
                wait = self._gather_wait()
                if wait > 0:
                    self.cond.wait(wait)
                    continue
                batch = self._take_batch()
                self.batches += 1  # dispatched so far
                self.in_flight += 1
                self.active.update(batch)
            self._pool.submit(self._run_batch, batch)

    def _drop_dead(self) -> None:
        """Remove cancelled and timed-out jobs from the queue (caller holds the lock)."""
        now = time.monotonic()
        kept: collections.deque[Job] = collections.deque()
        for job in self.waiting:
            if job.cancelled:
                continue
            if now > job.deadline:
                job.emit(
                    Unavailable(
                        "The request waited too long for the model and timed out. "
                        "Retry later, or raise --queue-timeout.",
                        retry_after=1.0,
                    )
                )
                continue
            kept.append(job)
        self.waiting = kept

    def _gather_wait(self) -> float:
        """Seconds to wait for companions of the oldest job (0: dispatch now)."""
        first = self.waiting[0]
        if first.key is None or len(self._companions(first)) >= self.max_batch:
            return 0.0
        # From the later of its arrival and the last batch's end: the clients of a batch
        # that just ended send their next requests within milliseconds, and dispatching
        # the oldest alone just before they arrive would split every later batch too.
        since = max(first.arrived, self.released)
        return max(0.0, since + self.gather_window - time.monotonic())

    def _companions(self, first: Job) -> list[Job]:
        key, length = first.key, len(first.ids)
        slack = 0 if self.batching == "exact" else max(16, length // 4)
        out = [first]
        for job in self.waiting:
            if len(out) >= self.max_batch:
                break
            if job is not first and job.key == key and abs(len(job.ids) - length) <= slack:
                out.append(job)
        return out

    def _take_batch(self) -> list[Job]:
        first = self.waiting[0]
        batch = [first] if first.key is None else self._companions(first)
        chosen = set(batch)
        self.waiting = collections.deque(j for j in self.waiting if j not in chosen)
        return batch

    # -- a worker thread --------------------------------------------------------------

    def _run_batch(self, batch: list[Job]) -> None:
        error: OcakError | None = None
        try:
            for job in batch:
                job.decoder = self.model.decoder(job.ids)
                job.stops = StopMatcher(job.stop)
            self._generate(batch)
        except Exception as exc:  # a CTranslate2 failure fails this batch, not the server
            log.exception("CTranslate2 generation failed")
            error = EngineError(f"generation failed: {exc}")
        finally:
            for job in batch:
                if job.finished:
                    continue
                if error is not None:
                    job.finished = True
                    job.emit(error)
                elif job.cancelled:
                    job.finished = True
                else:
                    self._finish(job, "length" if job.generated >= job.max_tokens else "stop")
            with self.cond:
                self.in_flight -= 1
                self.active.difference_update(batch)
                self.released = time.monotonic()
                self.cond.notify()

    def _generate(self, batch: list[Job]) -> None:
        first = batch[0]
        greedy = first.temperature <= 0.0
        options: dict[str, Any] = {
            "max_length": max(j.max_tokens for j in batch),
            "include_prompt_in_result": False,
            "end_token": self.model.end_tokens or None,
            "sampling_topk": 1 if greedy else first.top_k,
            "repetition_penalty": first.repeat_penalty,
            "sampling_topp": 1.0 if greedy else first.top_p,
            "sampling_temperature": 1.0 if greedy else first.temperature,
            "callback": self._callback(batch),
        }
        prompts = [self.model.token_strings(j.ids) for j in batch]
        if first.key is None and first.seed is not None:
            generator = self.model.seeded_generator(first.seed)
            try:
                generator.generate_batch(prompts, **options)
            finally:
                release_seed()
                del generator
        else:
            self.model.generator.generate_batch(prompts, **options)

    def _callback(self, batch: list[Job]) -> Callable[[Any], bool]:
        end_ids = self.model.end_ids
        tokenizer = self.model.tokenizer

        def on_step(step: Any) -> bool:
            job = batch[step.batch_id]
            if job.finished:
                return True
            if job.cancelled or not self.running:
                job.finished = True
                return True
            try:
                token = int(step.token_id)
                if token in end_ids:
                    self._finish(job, "stop")
                    return True
                job.generated += 1
                assert job.stops is not None
                piece = job.decoder.step(tokenizer, token) or ""
                text = job.stops.feed(piece)
                if text:
                    job.emit(TextDelta(text))
                if job.stops.stopped:
                    self._finish(job, "stop")
                elif job.generated >= job.max_tokens:
                    self._finish(job, "length")
                return bool(job.finished)
            except Exception as exc:
                log.exception("streaming a token failed")
                job.finished = True
                job.emit(EngineError(f"generation failed: {exc}"))
                return True

        return on_step

    def _finish(self, job: Job, reason: FinishReason) -> None:
        job.finished = True
        if job.stops is not None and not job.stops.stopped:
            rest = job.stops.flush()
            if rest:
                job.emit(TextDelta(rest))
        matched = job.stops.matched if job.stops is not None else None
        job.emit(Finished(reason, Usage(len(job.ids), job.generated), matched))
