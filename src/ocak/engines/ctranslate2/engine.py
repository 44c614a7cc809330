"""The CTranslate2 engine: converted models behind ocak's async ``Engine`` interface.

Same contract as the llama.cpp engine: admission errors before any text,
streaming through a queue fed from CTranslate2's worker threads, cancellation
when the consumer closes the iterator. What a shared CTranslate2 batch cannot
give a request is refused with a 400 naming the parameter (see ``refuse``):
nothing is silently ignored.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ocak.config import Settings
from ocak.engines.ctranslate2.model import Ct2Model
from ocak.engines.ctranslate2.scheduler import Job, Scheduler
from ocak.engines.threaded import Emit, ThreadedEngine, bridge, completion_budget
from ocak.errors import (
    EngineError,
    InvalidRequest,
    UnsupportedParameter,
)
from ocak.models.hardware import detect_cuda, pick_device
from ocak.protocol.generation import PENALTY_LAST_N, GenerationEvent, GenerationRequest

log = logging.getLogger("ocak.ctranslate2")

# What this engine does not do, and why (the README's support table says the same).
PENALTY_WHY = (
    "the CTranslate2 engine has no additive presence/frequency penalties "
    "(CTranslate2 offers only a multiplicative repetition penalty); use a GGUF model "
    "with the llama.cpp engine for penalties"
)
MIN_P_WHY = (
    "the CTranslate2 engine has no min_p sampler (CTranslate2 offers top_k, top_p and "
    "temperature); use a GGUF model with the llama.cpp engine"
)
WINDOW_WHY = (
    "CTranslate2's repetition penalty looks at the whole sequence: send repeat_last_n -1 "
    "(or leave it unset), or use a GGUF model with the llama.cpp engine for a window"
)
CONSTRAINT_WHY = (
    "the CTranslate2 engine cannot constrain decoding (CTranslate2 has no logits hook); "
    "use a GGUF model with the llama.cpp engine"
)


def refuse(request: GenerationRequest) -> None:
    """Raise ``UnsupportedParameter`` for what this engine cannot honour."""
    if request.adapters:
        names = ", ".join(a.name for a in request.adapters)
        raise InvalidRequest(
            f"The model '{request.model}' runs on the CTranslate2 engine, which does not "
            f"apply LoRA adapters (asked for: {names}). Serve a GGUF of the model "
            "(llama.cpp) to use them.",
            param="adapters",
            code="unsupported_parameter",
        )
    if request.presence_penalty:
        raise UnsupportedParameter("presence_penalty", PENALTY_WHY)
    if request.frequency_penalty:
        raise UnsupportedParameter("frequency_penalty", PENALTY_WHY)
    if request.min_p > 0.0:
        raise UnsupportedParameter("min_p", MIN_P_WHY)
    if request.repeat_penalty != 1.0 and request.repeat_last_n not in (-1, PENALTY_LAST_N):
        raise UnsupportedParameter("repeat_last_n", WINDOW_WHY)
    if request.constraint is not None:
        # Tool calls are constrained too: name what the client sent.
        raise UnsupportedParameter(request.constraint.param, CONSTRAINT_WHY)


class Ct2Engine(ThreadedEngine[Ct2Model, Scheduler]):
    kind = "ctranslate2"
    samplers = frozenset({"temperature", "top_p", "top_k", "repeat_penalty"})

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
        super().__init__(model_id, path, ctx_size=ctx_size, queue_timeout=queue_timeout)
        self.batching = batching
        self.parallel = parallel
        self.threads = threads or os.cpu_count() or 1
        self.workers = max(1, workers)
        self.max_queue = max_queue
        self.requested_device = device
        self.gather_window = gather_window
        self.device = "cpu"

    def _load(self) -> tuple[Ct2Model, Scheduler]:
        self.device = pick_device(self.requested_device, detect_cuda())
        per_worker = max(1, self.threads // self.workers)
        model = Ct2Model(
            self.path, device=self.device, workers=self.workers, threads_per_worker=per_worker
        )
        self.warn_context(model.context_length)
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

    def info_extra(self) -> dict[str, Any]:
        return {"device": self.device, "workers": self.workers}

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationEvent]:
        scheduler = self.ready()[1]
        refuse(request)
        tokens = self.prompt_tokens(request)
        max_tokens = completion_budget(
            len(tokens), request.max_tokens, self.ctx_size, request.soft_max_tokens
        )
        deadline = self.deadline(request)

        def start(emit: Emit) -> Job:
            job = Job(
                ids=tokens,
                max_tokens=max_tokens,
                temperature=request.temperature,
                top_p=request.top_p,
                top_k=request.top_k,
                repeat_penalty=request.repeat_penalty,
                seed=request.seed,
                stop=request.stop,
                emit=emit,
                deadline=deadline,
            )
            scheduler.submit(job)
            return job

        async for event in bridge(start, scheduler.cancel):
            yield event


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
