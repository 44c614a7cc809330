"""The CTranslate2 engine: converted models behind ocak's async ``Engine`` interface.

Same contract as the llama.cpp engine: admission errors before any text,
streaming through a queue fed from CTranslate2's worker threads, cancellation
when the consumer closes the iterator. What a shared CTranslate2 batch cannot
give a request is refused with a 400 naming the parameter (see ``refuse``):
nothing is silently ignored.
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
from ocak.engines.ctranslate2.model import Ct2Model
from ocak.engines.ctranslate2.scheduler import Job, Scheduler
from ocak.engines.threaded import Emit, bridge, completion_budget
from ocak.errors import (
    EngineError,
    InvalidRequest,
    OcakError,
    UnsupportedParameter,
)
from ocak.models.hardware import detect_cuda, pick_device
from ocak.protocol.generation import GenerationEvent, GenerationRequest

log = logging.getLogger("ocak.ctranslate2")

# Batches run one at a time by default; see bench/ct2.py for the measurement.
DEFAULT_WORKERS = 1

# What this engine does not do, and why (the README's support table says the same).
PENALTY_WHY = (
    "the CTranslate2 engine has no additive presence/frequency penalties "
    "(CTranslate2 offers only a multiplicative repetition penalty); use a GGUF model "
    "with the llama.cpp engine for penalties"
)
CONSTRAINT_WHY = (
    "the CTranslate2 engine cannot constrain decoding (CTranslate2 has no logits hook); "
    "use a GGUF model with the llama.cpp engine"
)


def refuse(request: GenerationRequest) -> None:
    """Raise ``UnsupportedParameter`` for what this engine cannot honour."""
    if request.presence_penalty:
        raise UnsupportedParameter("presence_penalty", PENALTY_WHY)
    if request.frequency_penalty:
        raise UnsupportedParameter("frequency_penalty", PENALTY_WHY)
    if request.constraint is not None:
        # Tool calls are constrained too: name what the client sent.
        raise UnsupportedParameter(request.constraint.param, CONSTRAINT_WHY)


class Ct2Engine(Engine):
    kind = "ctranslate2"

    def __init__(
        self,
        model_id: str,
        path: Path,
        *,
        ctx_size: int = 2048,
        parallel: int = 8,
        threads: int | None = None,
        workers: int = 1,
        max_queue: int = 64,
        queue_timeout: float = 120.0,
        device: str = "auto",
        gather_window: float = 0.05,
        batching: str = "exact",
    ) -> None:
        super().__init__(model_id)
        self.batching = batching
        self.path = path
        self.ctx_size = ctx_size
        self.parallel = parallel
        self.threads = threads or os.cpu_count() or 1
        self.workers = max(1, workers)
        self.max_queue = max_queue
        self.queue_timeout = queue_timeout
        self.requested_device = device
        self.gather_window = gather_window
        self.device = "cpu"
        self.model: Ct2Model | None = None
        self.scheduler: Scheduler | None = None

    async def load(self) -> None:
        try:
            self.model, self.scheduler = await asyncio.to_thread(self._load)
        except OcakError as exc:
            self.state, self.error = "error", exc.message
            return
        self.state = "ready"

    def _load(self) -> tuple[Ct2Model, Scheduler]:
        self.device = pick_device(self.requested_device, detect_cuda())
        per_worker = max(1, self.threads // self.workers)
        model = Ct2Model(
            self.path, device=self.device, workers=self.workers, threads_per_worker=per_worker
        )
        if model.context_length and self.ctx_size > model.context_length:
            log.warning(
                "%s: --ctx-size %d is larger than the model was trained for (%d)",
                self.model_id,
                self.ctx_size,
                model.context_length,
            )
        warm_up(model)
        scheduler = Scheduler(
            model,
            max_batch=self.parallel,
            max_queue=self.max_queue,
            gather_window=self.gather_window,
            batching=self.batching,
        )
        log.info(
            "%s: CTranslate2 %s on %s, %d worker(s) x %d thread(s), batches of up to %d",
            self.model_id,
            model.quantization or "model",
            self.device,
            self.workers,
            per_worker,
            self.parallel,
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
            extra={"device": self.device, "workers": self.workers},
        )

    def stats(self) -> EngineStats:
        return self.scheduler.stats() if self.scheduler else EngineStats()

    def _ready_model(self) -> Ct2Model:
        if self.model is None or self.scheduler is None:
            raise EngineError(f"model {self.model_id} is not loaded")
        return self.model

    def count_tokens(self, text: str) -> int:
        return len(self._ready_model().tokenize(text, add_special=False))

    def render(self, request: GenerationRequest) -> str:
        model = self._ready_model()
        if request.messages is not None:
            return model.chat_template.render(request.messages, tools=request.tools)
        return request.prompt or ""

    def prompt_tokens(self, request: GenerationRequest) -> list[int]:
        model = self._ready_model()
        tokens = model.tokenize(self.render(request))
        if not tokens:
            if model.bos_id is None:
                raise InvalidRequest("The prompt is empty.", param="prompt")
            tokens = [model.bos_id]
        return tokens

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        scheduler = self.scheduler
        if scheduler is None:
            raise EngineError(f"model {self.model_id} is not loaded")
        refuse(request)
        tokens = self.prompt_tokens(request)
        max_tokens = completion_budget(len(tokens), request.max_tokens, self.ctx_size)
        deadline = time.monotonic() + (request.queue_timeout or self.queue_timeout)

        def start(emit: Emit) -> Job:
            job = Job(
                ids=tokens,
                max_tokens=max_tokens,
                temperature=request.temperature,
                top_p=request.top_p,
                seed=request.seed,
                stop=request.stop,
                emit=emit,
                deadline=deadline,
            )
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


def warm_up(model: Ct2Model) -> None:
    """One sampled step on every worker: their samplers take random seeds now, before
    a seeded request sets CTranslate2's global seed, and the first request is not slow."""
    start = [model.token_strings([model.bos_id if model.bos_id is not None else 0])]
    try:
        results = [
            model.generator.generate_batch(start, max_length=1, sampling_topk=0, asynchronous=True)
            for _ in range(model.workers)
        ]
        for batch in results:
            for result in batch:
                result.result()
    except Exception as exc:  # pragma: no cover - a model that cannot run one step
        raise EngineError(f"CTranslate2 could not run {model.path}: {exc}") from exc


def from_spec(model_id: str, path: Path, settings: Settings) -> Ct2Engine:
    """The engine for a converted model, from the server's settings (``device``,
    ``ct2_workers``: batches run at once, the threads split between them, and
    ``ct2_batching``: exact or similar, see the scheduler)."""
    return Ct2Engine(
        model_id,
        path,
        ctx_size=settings.ctx_size,
        parallel=settings.parallel,
        threads=settings.threads,
        workers=settings.ct2_workers,
        max_queue=settings.max_queue,
        queue_timeout=settings.queue_timeout,
        device=settings.device,
        batching=settings.ct2_batching,
    )
