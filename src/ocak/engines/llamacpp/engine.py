"""The llama.cpp engine: GGUF models behind ocak's async ``Engine`` interface.

Loading happens in a worker thread; generation runs in the scheduler's decode
thread, so the event loop (``/health``, other routes) never waits on the model.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

from ocak.config import Settings
from ocak.engines.base import Engine, EngineStats, ModelInfo
from ocak.engines.llamacpp.model import LlamaModel
from ocak.engines.llamacpp.sampling import LogitsMask, SamplingParams
from ocak.engines.llamacpp.scheduler import Job, Scheduler
from ocak.engines.threaded import Emit, bridge, completion_budget
from ocak.errors import EngineError, InvalidRequest, OcakError
from ocak.protocol.generation import (
    GenerationEvent,
    GenerationRequest,
)

log = logging.getLogger("ocak.llamacpp")


class LlamaCppEngine(Engine):
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
        super().__init__(model_id)
        self.path = path
        self.ctx_size = ctx_size
        self.parallel = parallel
        self.threads = threads or os.cpu_count() or 1
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self.prefill_chunk = prefill_chunk
        self.model: LlamaModel | None = None
        self.scheduler: Scheduler | None = None

    async def load(self) -> None:
        try:
            self.model, self.scheduler = await asyncio.to_thread(self._load)
        except OcakError as exc:
            self.state, self.error = "error", exc.message
            return
        self.state = "ready"

    def _load(self) -> tuple[LlamaModel, Scheduler]:
        model = LlamaModel(self.path)
        if self.ctx_size > model.n_ctx_train:
            log.warning(
                "%s: --ctx-size %d is larger than the model was trained for (%d)",
                self.model_id,
                self.ctx_size,
                model.n_ctx_train,
            )
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

    def info(self) -> ModelInfo:
        return ModelInfo(
            id=self.model_id,
            engine=self.kind,
            path=str(self.path),
            context_length=self.ctx_size,
            quantization=self.model.quantization if self.model else None,
            size_bytes=self.model.size_bytes if self.model else None,
        )

    def stats(self) -> EngineStats:
        return self.scheduler.stats() if self.scheduler else EngineStats()

    def _ready_model(self) -> LlamaModel:
        if self.model is None or self.scheduler is None:
            raise EngineError(f"model {self.model_id} is not loaded")
        return self.model

    def count_tokens(self, text: str) -> int:
        return len(self._ready_model().tokenize(text, add_special=False))

    def render(self, request: GenerationRequest) -> str:
        """The prompt text: the chat template applied to messages, or the raw prompt."""
        model = self._ready_model()
        if request.messages is not None:
            return model.chat_template.render(request.messages, tools=request.tools)
        return request.prompt or ""

    def prompt_tokens(self, request: GenerationRequest) -> list[int]:
        model = self._ready_model()
        tokens = model.tokenize(self.render(request))
        if not tokens:
            if model.bos < 0:
                raise InvalidRequest("The prompt is empty.", param="prompt")
            tokens = [model.bos]
        return tokens

    def make_mask(self, request: GenerationRequest) -> LogitsMask | None:
        """A grammar mask for a constrained request (runs off the event loop)."""
        if request.constraint is None:
            return None
        from ocak.engines.llamacpp.constrain import GrammarMask
        from ocak.structured.grammar import compile_constraint

        return GrammarMask(self._ready_model(), compile_constraint(request.constraint))

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        scheduler = self.scheduler
        if scheduler is None:
            raise EngineError(f"model {self.model_id} is not loaded")
        tokens = self.prompt_tokens(request)
        max_tokens = completion_budget(len(tokens), request.max_tokens, self.ctx_size)
        mask = None
        if request.constraint is not None:
            mask = await asyncio.to_thread(self.make_mask, request)
        deadline = time.monotonic() + (request.queue_timeout or self.queue_timeout)
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

    async def close(self) -> None:
        scheduler, model = self.scheduler, self.model
        self.scheduler, self.model = None, None
        if scheduler is not None:
            await asyncio.to_thread(scheduler.close)
        if model is not None:
            model.close()
        self.state = "closed"


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
