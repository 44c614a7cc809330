"""Continuous batching over llama.cpp's batch API.

One thread owns the llama.cpp context and runs the decode loop. Each step it
admits waiting jobs into free sequence slots, computes a bounded amount of
waiting prompt (so a long prompt never stalls running streams for long), then
decodes the next token of every generating sequence in one ``llama_batch`` and
samples each with its own sampler. Jobs that finish or are cancelled leave at
once; their slot keeps its KV cells so a later prompt that starts the same way
(a system prompt, an earlier turn) reuses them.

A prompt is computed in chunks that end at canonical places, a function of the
prompt's own tokens: after every end-of-turn token (``<|im_end|>``, ``<|eot_id|>``:
the end of each chat message) and at every multiple of ``prefill_chunk``. Cells
are reused only up to such an end that both prompts share, so a prompt's cells
are computed the same way whether they came from the cache or not. Reusing any
shared prefix, as llama-server does, would not be: llama.cpp's CPU flash attention
takes a tiled path for calls of more than about 32 rows, so a token's cells differ
in their last bits with the size of the call that computed them (measured on the
default model: a 120-token prompt split at 18, 64 or 100 gave three different sets
of logits), and a greedy answer would then depend on what ran before it.

Consecutive chunks of one prompt that are together shorter than ``TILE_ROWS`` go
into one call: llama.cpp computes such rows one by one, so they come out the same
alone, split, or beside other sequences (tests/e2e/test_llamacpp_rows.py checks
that on the real library); a chat's short last message and the assistant header
after it then cost one call instead of two.

LoRA adapters apply to the whole context, so each step decodes the sequences of
each adapter set (``LoraSet``: adapters and scales) in a call of its own, and a
slot's cells are reused only by a prompt with the same set: cells computed under
one adapter or scale are never shared with another.

Events go back to the asking coroutine through ``Job.emit`` (thread-safe).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import llama_cpp as C

from ocak.engines.llamacpp.adapters import NONE, LoraKey, LoraSet
from ocak.engines.llamacpp.model import LlamaModel
from ocak.engines.llamacpp.sampling import LogitsMask, Sampler, SamplingParams, logits_view
from ocak.engines.text import StopMatcher, Utf8Stream
from ocak.engines.threaded import Emit, JobQueue
from ocak.errors import EngineError, OcakError, Unavailable
from ocak.models.gguf_header import kv_shape
from ocak.protocol.generation import Finished, FinishReason, TextDelta, Usage

log = logging.getLogger("ocak.scheduler")

# A prefix at least this much longer in another slot is copied over rather than
# computed: copying a stream costs about as much as computing two tokens.
COPY_MIN_TOKENS = 4

# llama.cpp's CPU flash attention takes a sequence's rows one at a time in a call where it
# has fewer than this many, and in tiles of 64 from there (GGML_FA_TILE_Q); rows computed
# one at a time do not depend on what else the call held, tiled ones do.
TILE_ROWS = 64


@dataclass(eq=False)
class Job:
    """One generation as the scheduler sees it."""

    tokens: list[int]
    max_tokens: int
    params: SamplingParams
    stop: list[str]
    emit: Emit
    deadline: float
    mask: LogitsMask | None = None
    lora: LoraSet = NONE
    cancelled: bool = False
    # Set by the scheduler thread.
    slot: Slot | None = None
    ends: list[int] = field(default_factory=list)  # where its prompt chunks end
    pending: list[int] = field(default_factory=list)
    sampler: Sampler | None = None
    generated: int = 0
    cached: int = 0
    last_token: int | None = None
    utf8: Utf8Stream = field(default_factory=Utf8Stream)
    stops: StopMatcher | None = None
    # time.monotonic() readings: set once per job, never per token; the engine turns them
    # into the request's queue, prefill and decode spans when it is traced.
    submitted_at: float = 0.0
    admitted_at: float = 0.0
    first_token_at: float = 0.0
    finished_at: float = 0.0
    reason: str = ""  # why it ended: stop, length, cancelled, error


@dataclass(eq=False)
class Slot:
    """A KV-cache sequence id and the tokens whose cells it holds.

    ``ends`` lists where the prompt chunks computed so far ended (canonical
    places, see the module docstring): only cells up to one of those may serve
    another prompt, because only they are computed exactly as a fresh prompt
    would compute them.
    """

    seq: int
    tokens: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    lora: LoraKey = ()  # the adapter set its cells were computed with
    job: Job | None = None
    last_used: float = 0.0


def chunk_ends(tokens: list[int], chunk: int, is_turn_end: Callable[[int], bool]) -> list[int]:
    """Where ``tokens``' prefill chunks end: after each end-of-turn token, at each
    multiple of ``chunk``, and at the end."""
    ends = {i + 1 for i, t in enumerate(tokens) if is_turn_end(t)}
    ends.update(range(chunk, len(tokens), chunk))
    ends.add(len(tokens))
    return sorted(ends)


def call_ends(start: int, ends: list[int], rows: int = TILE_ROWS) -> list[int]:
    """The chunk ends, after ``start``, that one prefill call covers: the next chunk, and
    the ones after it while the call stays under ``rows`` tokens (a chunk of ``rows`` or
    more has a call of its own)."""
    following = [e for e in ends if e > start]
    covered = following[:1]
    for end in following[1:]:
        if end - start >= rows:
            break
        covered.append(end)
    return covered


def reusable_prefix(slot_ends: list[int], job_ends: list[int], shared: int, limit: int) -> int:
    """The longest prefix of cells a job may take from a slot: up to a chunk end the two
    prompts share, with the same chunk ends before it, within ``shared`` equal tokens
    and ``limit``."""
    best = 0
    for a, b in zip(slot_ends, job_ends, strict=False):
        if a != b or a > shared or a > limit:
            break
        best = a
    return best


def runs(seqs: set[int]) -> int:
    """How many runs of consecutive ids ``seqs`` makes ({0, 1, 2, 5} makes two)."""
    return sum(1 for s in seqs if s - 1 not in seqs)


def placement(seq: int, key: LoraKey, running: dict[int, LoraKey]) -> tuple[int, int]:
    """How well slot ``seq`` suits a sequence of adapter set ``key`` beside the ``running``
    ones (lower is better): the runs of consecutive ids its set's decode call will make,
    then, for a set not running yet, nearness to other sets' sequences (so the runs that
    will grow beside it have room)."""
    same = {s for s, k in running.items() if k == key}
    others = [abs(seq - s) for s, k in running.items() if k != key]
    spread = -min(others) if others and not same else 0
    return runs(same | {seq}), spread


def choose_slot(
    free: list[Slot],
    reusable: Callable[[Slot], int],
    cached: Callable[[Slot], int],
    chunk: int,
    fit: Callable[[Slot], tuple[int, int]] = lambda s: (0, 0),
) -> Slot:
    """The free slot a new prompt goes to.

    1. One whose cache the prompt mostly continues (an earlier turn of the same chat,
       the same long persona): the most reusable.
    2. Else, among slots whose cache is cheap to lose (at most two chunks the prompt
       would not reuse), the best ``fit`` (``placement``), then the lowest sequence id.
       llama.cpp decodes only consecutive sequence ids in one micro-batch, and a gap in
       the ids of one decode call costs a second pass over the weights on every step
       (~20% at 8 streams here), far more than recomputing a short prefix, which a copy
       from another slot usually saves anyway. With adapters, each adapter set has a
       decode call of its own, so each set's sequences are kept together.
    3. Else the least recently used.
    """
    continued = [s for s in free if reusable(s) >= chunk and 2 * reusable(s) >= cached(s)]
    if continued:
        return max(continued, key=lambda s: (reusable(s), -s.seq))
    cheap = [s for s in free if cached(s) - reusable(s) <= 2 * chunk]
    if cheap:
        return min(cheap, key=lambda s: (fit(s), s.seq))
    return min(free, key=lambda s: (s.last_used, s.seq))


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class Scheduler(JobQueue[Job]):
    """Owns one llama.cpp context with ``parallel`` sequences of ``ctx_size`` tokens."""

    def __init__(
        self,
        model: LlamaModel,
        *,
        parallel: int,
        ctx_size: int,
        threads: int,
        max_queue: int,
        prefill_chunk: int,
    ) -> None:
        super().__init__(max_queue)
        self.model = model
        self.parallel = parallel
        self.ctx_size = ctx_size
        self.prefill_chunk = prefill_chunk
        self.n_batch = max(512, prefill_chunk, parallel)
        params = C.llama_context_default_params()
        params.n_ctx = parallel * ctx_size
        params.n_batch = self.n_batch
        params.n_ubatch = self.n_batch
        params.n_seq_max = parallel
        params.n_threads = threads
        params.n_threads_batch = threads
        # One KV stream per sequence: a sequence's attention never sees, nor depends
        # on, another's cells (a unified cache changes greedy answers under load).
        params.kv_unified = False
        params.no_perf = True
        self.ctx = C.llama_init_from_model(model.ptr, params)
        if not self.ctx:
            raise EngineError(
                f"llama.cpp could not create a context of {parallel} x {ctx_size} tokens "
                "(not enough memory? try a smaller --ctx-size or --parallel)"
            )
        self.kv_tokens = C.llama_n_ctx(self.ctx)
        self.mem = C.llama_get_memory(self.ctx)
        self.batch = C.llama_batch_init(self.n_batch, 0, 1)
        self.slots = [Slot(i) for i in range(parallel)]
        self.decode_steps = 0
        self.applied: LoraKey = ()  # the adapter set on the context now
        self._thread = threading.Thread(target=self._run, name="ocak-llamacpp", daemon=True)
        self._thread.start()

    # -- called from the event loop -------------------------------------------------

    def running_jobs(self) -> int:
        return sum(1 for s in self.slots if s.job is not None)

    def capacity(self) -> int:
        return self.parallel

    def close(self) -> None:
        with self.cond:
            waiting = self.stop_accepting()
        self._thread.join(timeout=30)
        self.refuse(waiting)
        for slot in self.slots:
            if slot.job is not None:
                self._fail(slot.job, Unavailable("The engine shut down during this request."))
        if self.batch is not None:
            C.llama_batch_free(self.batch)
            self.batch = None
        if self.ctx:
            C.llama_free(self.ctx)
            self.ctx = None

    # -- the decode thread ----------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self.cond:
                while self.running and not self.waiting and not self._any_active():
                    self.cond.wait()
                if not self.running:
                    return
                self._admit()
            try:
                self._step()
            except Exception as exc:  # never let the loop die; fail what was running
                log.exception("decode step failed")
                for slot in self.slots:
                    if slot.job is not None:
                        self._fail(slot.job, EngineError(f"generation failed: {exc}"))

    def _any_active(self) -> bool:
        return any(s.job is not None for s in self.slots)

    def _admit(self) -> None:
        """Move waiting jobs into free slots (caller holds the lock)."""
        now = time.monotonic()
        kept: collections.deque[Job] = collections.deque()
        while self.waiting:
            job = self.waiting.popleft()
            if job.cancelled:
                continue
            if now > job.deadline:
                job.emit(
                    Unavailable(
                        "The request waited too long for a free sequence and timed out. "
                        "Retry later, or raise --parallel / --queue-timeout.",
                        retry_after=1.0,
                    )
                )
                continue
            free = [s for s in self.slots if s.job is None]
            if not free:
                kept.append(job)
                continue
            self._place(job, free)
        self.waiting = kept

    def _place(self, job: Job, free: list[Slot]) -> None:
        """Give ``job`` a free slot, reusing cached prompt cells where they are canonical.

        Cells are reused only up to a chunk end both prompts share (see ``Slot.ends``),
        so a prompt is computed the same way whether its prefix was cached or not, and
        a greedy answer does not depend on what ran before it.
        """
        job.ends = chunk_ends(job.tokens, self.prefill_chunk, self.model.is_eog)
        limit = len(job.tokens) - 1  # at least one token left to decode
        found: dict[int, int] = {}

        def reusable(slot: Slot) -> int:
            if slot.lora != job.lora.key:
                return 0  # cells of another adapter set (or scale) are never shared
            if slot.seq not in found:
                shared = common_prefix(slot.tokens, job.tokens)
                found[slot.seq] = reusable_prefix(slot.ends, job.ends, shared, limit)
            return found[slot.seq]

        def cached(slot: Slot) -> int:
            return slot.ends[-1] if slot.ends else 0

        running = {s.seq: s.lora for s in self.slots if s.job is not None}
        best = choose_slot(
            free,
            reusable,
            cached,
            self.prefill_chunk,
            lambda slot: placement(slot.seq, job.lora.key, running),
        )
        shared = reusable(best)
        donor = max(self.slots, key=reusable)
        if donor is not best and reusable(donor) >= shared + COPY_MIN_TOKENS:
            # Separate KV streams: llama.cpp copies the donor's whole stream (~5 ms for
            # 2,048 cells here, the cost of computing 2 tokens); trim after.
            shared = reusable(donor)
            C.llama_memory_seq_cp(self.mem, donor.seq, best.seq, -1, -1)
            best.tokens = donor.tokens[:shared]
        if not C.llama_memory_seq_rm(self.mem, best.seq, shared, -1):
            C.llama_memory_seq_rm(self.mem, best.seq, -1, -1)
            shared = 0
        best.tokens = job.tokens[:shared]
        best.ends = [e for e in job.ends if e <= shared]
        best.lora = job.lora.key
        best.job = job
        job.slot = best
        job.cached = shared
        job.pending = job.tokens[shared:]
        job.sampler = Sampler(job.params)
        job.stops = StopMatcher(job.stop)
        job.admitted_at = time.monotonic()

    def _step(self) -> None:
        """One iteration: prompt chunks, then a decode call for every generating sequence.

        Prompts are processed in chunks that end at canonical places (message ends
        and multiples of ``prefill_chunk``), each chunk in a call of its own (or with
        the short ones after it, computed row by row either way): the same chunks
        whatever else is running, so concurrency never changes an answer.
        A step computes up to ``prefill_chunk`` prompt tokens and finishes at most one
        prompt, which bounds how long running streams wait between two tokens; it
        runs first, so a new request's first token does not also wait for a decode.
        Generating sequences (the one whose prompt just finished too) then advance
        together in one ``llama_decode``, one token each, in sequence-id order so
        llama.cpp keeps them in one micro-batch: one call per adapter set in use.
        """
        for slot in self.slots:
            if slot.job is not None and slot.job.cancelled:
                self._finish(slot.job, "cancelled")
        budget = self.prefill_chunk
        prefilling = sorted(
            (s.job for s in self.slots if s.job is not None and s.job.pending),
            key=lambda j: j.admitted_at,
        )
        for job in prefilling:
            # A job's chunks run back to back while the step's budget lasts, so a prompt
            # split at its message ends does not wait a decode step between them.
            while budget > 0 and job.pending and not job.cancelled and job.slot is not None:
                budget -= self._prefill(job, job.slot)
            if not job.pending:
                # One prompt finishes per step: its stream starts at once instead of
                # waiting for every other arrival's prefill, and streams that arrived
                # together leave at different steps, so the next wave of requests
                # does not arrive all at once either.
                break
        generating = [
            s.job
            for s in self.slots
            if s.job is not None and not s.job.pending and s.job.last_token is not None
        ]
        groups: dict[LoraKey, list[Job]] = {}
        for job in generating:
            groups.setdefault(job.lora.key, []).append(job)
        for jobs in groups.values():
            for i, job in enumerate(jobs):
                assert job.slot is not None and job.last_token is not None
                self._add(i, job.last_token, len(job.slot.tokens), job.slot.seq, True)
                job.slot.tokens.append(job.last_token)
            self._use(jobs[0].lora)
            self._decode(len(jobs))
            for i, job in enumerate(jobs):
                self._sample(job, i)

    def _prefill(self, job: Job, slot: Slot) -> int:
        """Compute ``job``'s next prompt chunk (with the short ones after it, see
        ``call_ends``) in a decode call of its own; how many tokens it took."""
        start = len(slot.tokens)
        covered = call_ends(start, job.ends)
        take = job.pending[: covered[-1] - start]
        job.pending = job.pending[len(take) :]
        last = not job.pending
        for k, tok in enumerate(take):
            self._add(k, tok, start + k, slot.seq, last and k == len(take) - 1)
        slot.tokens.extend(take)
        self._use(job.lora)
        self._decode(len(take))
        slot.ends.extend(covered)
        if last:
            self._sample(job, len(take) - 1)
        return len(take)

    def _use(self, lora: LoraSet) -> None:
        """Put ``lora``'s adapters on the context for the next decode call."""
        if lora.key != self.applied:
            lora.apply(self.ctx)
            self.applied = lora.key

    def _decode(self, n: int) -> None:
        self.batch.n_tokens = n
        rc = C.llama_decode(self.ctx, self.batch)
        if rc == 1:
            # No room in the KV cache: drop cached cells of idle slots and retry once.
            self._evict_idle()
            rc = C.llama_decode(self.ctx, self.batch)
        if rc != 0:
            raise EngineError(f"llama_decode returned {rc}")
        self.decode_steps += 1

    def _add(self, i: int, token: int, pos: int, seq: int, logits: bool) -> None:
        b = self.batch
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq
        b.logits[i] = logits

    def _evict_idle(self) -> None:
        for slot in self.slots:
            if slot.job is None and slot.tokens:
                C.llama_memory_seq_rm(self.mem, slot.seq, -1, -1)
                slot.tokens = []
                slot.ends = []

    def _sample(self, job: Job, index: int) -> None:
        assert job.sampler is not None and job.stops is not None
        logits = logits_view(self.ctx, index, self.model.n_vocab)
        if job.mask is not None:
            job.mask.apply(logits)
        token = job.sampler.sample(logits)
        if job.generated == 0:
            job.first_token_at = time.monotonic()
        if job.mask is not None:
            job.mask.accept(token)
        if self.model.is_eog(token):
            self._finish(job, "stop")
            return
        job.generated += 1
        job.last_token = token
        text = job.stops.feed(job.utf8.feed(self.model.piece(token)))
        if text:
            job.emit(TextDelta(text))
        if job.stops.stopped or (job.mask is not None and job.mask.is_done()):
            self._finish(job, "stop")
        elif job.generated >= job.max_tokens:
            self._finish(job, "length")

    def _finish(self, job: Job, reason: FinishReason) -> None:
        slot = job.slot
        job.finished_at, job.reason = time.monotonic(), reason  # before Finished is seen
        if reason != "cancelled" and job.stops is not None and not job.stops.stopped:
            rest = job.stops.feed(job.utf8.flush()) + job.stops.flush()
            if rest:
                job.emit(TextDelta(rest))
        if reason != "cancelled":
            matched = job.stops.matched if job.stops is not None else None
            usage = Usage(len(job.tokens), job.generated, job.cached)
            job.emit(Finished(reason, usage, matched))
        self._release(job, slot)

    def _fail(self, job: Job, error: OcakError) -> None:
        job.finished_at, job.reason = time.monotonic(), "error"
        job.emit(error)
        slot = job.slot
        if slot is not None:
            C.llama_memory_seq_rm(self.mem, slot.seq, -1, -1)
            slot.tokens = []
            slot.ends = []
        self._release(job, slot)

    def _release(self, job: Job, slot: Slot | None) -> None:
        job.sampler = None
        if slot is not None:
            slot.job = None
            slot.last_used = time.monotonic()
        job.slot = None

    def describe(self) -> dict[str, Any]:
        """Figures printed at start: the KV cache is sized once, up front."""
        shape = kv_shape(self.model.meta)
        return {
            "parallel": self.parallel,
            "ctx_size": self.ctx_size,
            "kv_tokens": self.kv_tokens,
            "kv_bytes": shape.bytes_for(self.kv_tokens) if shape else 0,
        }
