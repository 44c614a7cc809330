"""The llama.cpp engine: GGUF models behind ocak's async ``Engine`` interface.

Loading happens in a worker thread; generation runs in the scheduler's decode
thread, so the event loop (``/health``, other routes) never waits on the model.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

from ocak.config import Settings
from ocak.engines.llamacpp.model import LlamaModel
from ocak.engines.llamacpp.sampling import LogitsMask, SamplingParams
from ocak.engines.llamacpp.scheduler import Job, Scheduler
from ocak.engines.threaded import Emit, ThreadedEngine, bridge, completion_budget
from ocak.protocol.generation import (
    GenerationEvent,
    GenerationRequest,
)

log = logging.getLogger("ocak.llamacpp")


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

    def _load(self) -> tuple[LlamaModel, Scheduler]:
        model = LlamaModel(self.path)
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

    def make_mask(self, request: GenerationRequest) -> LogitsMask | None:
        """A grammar mask for a constrained request (runs off the event loop)."""
        if request.constraint is None:
            return None
        from ocak.engines.llamacpp.constrain import GrammarMask
        from ocak.structured.grammar import compile_constraint

        return GrammarMask(self.ready()[0], compile_constraint(request.constraint))

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        scheduler = self.ready()[1]
        tokens = self.prompt_tokens(request)
        max_tokens = completion_budget(len(tokens), request.max_tokens, self.ctx_size)
        mask = None
        if request.constraint is not None:
            mask = await asyncio.to_thread(self.make_mask, request)
        deadline = self.deadline(request)
        params = SamplingParams(
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            presence_penalty=request.presence_penalty,
            frequency_penalty=request.frequency_penalty,
        )

        def start(emit: Emit) -> Job:
            job = Job(tokens, max_tokens, params, request.stop, emit, deadline, mask=mask)
            scheduler.submit(job)
            return job

        async for event in bridge(start, scheduler.cancel):
            yield event


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
