"""The llama.cpp engine: GGUF models behind ocak's async ``Engine`` interface.

Loading happens in a worker thread; generation runs in the scheduler's decode
thread, so the event loop (``/health``, other routes) never waits on the model.
A traced request gets its queue, prefill and decode spans once its generation is over,
from the job's timestamps (the decode thread does no tracing work).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

from ocak import telemetry
from ocak.config import Settings
from ocak.engines.llamacpp.adapters import NONE, AdapterCache, LoraSet
from ocak.engines.llamacpp.model import LlamaModel
from ocak.engines.llamacpp.sampling import LogitsMask, SamplingParams
from ocak.engines.llamacpp.scheduler import Job, Scheduler
from ocak.engines.threaded import Emit, ThreadedEngine, bridge, completion_budget
from ocak.protocol.generation import (
    GenerationEvent,
    GenerationRequest,
)
from ocak.telemetry import genai

log = logging.getLogger("ocak.llamacpp")


GGUF_SAMPLING = {
    "temp": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "min_p": "min_p",
    "penalty_repeat": "repeat_penalty",
}


class LlamaCppEngine(ThreadedEngine[LlamaModel, Scheduler]):
    kind = "llama.cpp"

    def __init__(
        self,
        model_id: str,
        path: Path,
        *,
        ctx_size: int = 2048,
        parallel: int = 8,
        threads: int | None = None,
        max_queue: int = 64,
        queue_timeout: float = 120.0,
        prefill_chunk: int = 128,
    ) -> None:
        super().__init__(model_id, path, ctx_size=ctx_size, queue_timeout=queue_timeout)
        self.parallel = parallel
        self.threads = threads or os.cpu_count() or 1
        self.max_queue = max_queue
        self.prefill_chunk = prefill_chunk
        self.adapters: AdapterCache | None = None

    def _load(self) -> tuple[LlamaModel, Scheduler]:
        model = LlamaModel(self.path)
        self.adapters = AdapterCache(model)
        self.warn_context(model.n_ctx_train)
        scheduler = Scheduler(
            model,
            parallel=self.parallel,
            ctx_size=self.ctx_size,
            threads=self.threads,
            max_queue=self.max_queue,
            prefill_chunk=self.prefill_chunk,
        )
        d = scheduler.describe()
        log.info(
            "%s: %s, KV cache %d x %d = %d tokens (%.0f MiB), %d threads",
            self.model_id,
            model.description,
            d["parallel"],
            d["ctx_size"],
            d["kv_tokens"],
            d["kv_bytes"] / 2**20,
            self.threads,
        )
        return model, scheduler

    def model_sampling(self) -> dict[str, float]:
        """The GGUF's ``general.sampling.*`` keys (llama.cpp's names for what the model's
        authors recommend), as ocak's sampler fields."""
        model = self.ready()[0]
        found: dict[str, float] = {}
        for key, name in GGUF_SAMPLING.items():
            value = model.meta(f"general.sampling.{key}")
            if value is not None:
                try:
                    found[name] = float(value)
                except ValueError:
                    log.warning("ignoring general.sampling.%s=%r in %s", key, value, self.path)
        return found

    def make_mask(
        self, request: GenerationRequest, max_tokens: int | None = None
    ) -> LogitsMask | None:
        """A grammar mask for a constrained request that finishes within ``max_tokens``
        (runs off the event loop; a budget no valid answer fits is a 400 here)."""
        if request.constraint is None:
            return None
        from ocak.engines.llamacpp.constrain import GrammarMask
        from ocak.structured.grammar import compile_constraint

        grammar = compile_constraint(request.constraint)
        return GrammarMask(self.ready()[0], grammar, max_tokens)

    async def lora_set(self, request: GenerationRequest) -> LoraSet:
        """The request's adapters, loaded (off the event loop) the first time; a request
        without any never leaves the loop."""
        cache = self.adapters
        assert cache is not None  # set by _load
        if not request.adapters:
            return NONE
        return await asyncio.to_thread(cache.lora_set, request.adapters)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        scheduler = self.ready()[1]
        tokens = self.prompt_tokens(request)
        max_tokens = completion_budget(
            len(tokens), request.max_tokens, self.ctx_size, request.soft_max_tokens
        )
        lora = await self.lora_set(request)
        mask = None
        if request.constraint is not None:
            mask = await asyncio.to_thread(self.make_mask, request, max_tokens)
        deadline = self.deadline(request)
        params = SamplingParams(
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            presence_penalty=request.presence_penalty,
            frequency_penalty=request.frequency_penalty,
            top_k=request.top_k,
            min_p=request.min_p,
            repeat_penalty=request.repeat_penalty,
            repeat_last_n=request.repeat_last_n,
        )

        where = telemetry.capture()  # the span this generation's steps belong to, if traced
        jobs: list[Job] = []

        def start(emit: Emit) -> Job:
            job = Job(
                tokens, max_tokens, params, request.stop, emit, deadline, mask=mask, lora=lora
            )
            job.submitted_at = time.monotonic()
            scheduler.submit(job)
            jobs.append(job)
            return job

        try:
            async for event in bridge(start, scheduler.cancel):
                yield event
        finally:
            if where is not None and jobs:
                stage_spans(where, jobs[0])


def stage_spans(where: telemetry.Captured, job: Job) -> None:
    """The job's time waiting for a sequence, computing its prompt, and generating, as
    spans that meet end to start (a stage it never reached is left out; one cut short
    ends now)."""
    now, offset = time.monotonic(), telemetry.clock_offset()
    reason = job.reason or "cancelled"
    admitted = job.admitted_at or None
    queued = {"ocak.admitted": admitted is not None}
    telemetry.past(where, "queue", job.submitted_at, admitted or now, queued, offset=offset)
    if admitted is None:
        return
    first = job.first_token_at or None
    ended = job.finished_at or now
    prompt = {
        genai.INPUT_TOKENS: len(job.tokens),
        genai.CACHED_INPUT_TOKENS: job.cached,
        "ocak.prefill_tokens": len(job.tokens) - job.cached,
    }
    telemetry.past(where, "prefill", admitted, first or ended, prompt, offset=offset)
    if first is None:
        return
    output = {
        genai.OUTPUT_TOKENS: job.generated,
        genai.FINISH_REASONS: (reason,),
        "ocak.tokens_per_second": round(job.generated / max(ended - first, 1e-9), 2),
    }
    telemetry.past(where, "decode", first, ended, output, offset=offset)


def from_spec(model_id: str, path: Path, settings: Settings) -> LlamaCppEngine:
    """The ``llama.cpp`` engine kind (entry point ``ocak.engines``)."""
    return LlamaCppEngine(
        model_id,
        path,
        ctx_size=settings.ctx_size,
        parallel=settings.parallel,
        threads=settings.threads,
        max_queue=settings.max_queue,
        queue_timeout=settings.queue_timeout,
        prefill_chunk=settings.prefill_chunk,
    )
