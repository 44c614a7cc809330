"""Running a suite: every case N times on every target, over HTTP, within a concurrency
limit, graded, checkpointed, and summed up into the result document.

Repeats are the outer loop, so an interrupted run has spread its samples over all cases
and targets. Each finished sample goes to the checkpoint at once (``checkpoint``), except
one whose request never reached the server, which a resumed run sends again.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from ocak.evals.base import Grade, GradeContext
from ocak.evals.checkpoint import Checkpoint, checkpoint_path
from ocak.evals.client import EvalClient, ServerUnreachable
from ocak.evals.results import Key, Sample, build_document
from ocak.evals.suite import Case, Suite, Target


async def grade_all(case: Case, ctx: GradeContext) -> list[Grade]:
    """Every grader of ``case`` on one answer; a grader that breaks fails, saying why."""
    grades = []
    for grader in case.graders:
        try:
            grades.append(await grader.grade(ctx))
        except Exception as exc:  # one grader's bug must not end a long run
            grades.append(grader.failed(f"the grader failed: {type(exc).__name__}: {exc}"))
    return grades


async def run_sample(client: EvalClient, target: Target, case: Case, repeat: int) -> Sample:
    """Send ``case`` to ``target`` once and grade the answer."""
    reply = await client.chat(case.request(target))
    sample = Sample(
        target.id,
        case.name,
        repeat,
        status=reply.status,
        error=reply.error,
        latency_ms=reply.latency_ms,
        attempts=reply.attempts,
        waited_s=reply.waited_s,
    )
    answer = reply.answer()
    if answer is None or reply.body is None:
        return sample
    sample.output = answer.output
    sample.tool_calls = [c.to_dict() for c in answer.tool_calls]
    sample.finish_reason = answer.finish_reason
    sample.prompt_tokens = answer.prompt_tokens
    sample.completion_tokens = answer.completion_tokens
    sample.model = reply.body.get("model")
    prompt = reply.body.get("prompt")
    sample.prompt_version = prompt if isinstance(prompt, dict) else None
    ctx = GradeContext(answer, case.reference, case.input, client)
    sample.grades = await grade_all(case, ctx)
    return sample


def plan(suite: Suite, done: dict[Key, Sample]) -> list[tuple[Target, Case, int]]:
    """The samples still to run, repeats outermost."""
    return [
        (t, c, r)
        for r in range(suite.repeats)
        for t in suite.targets
        for c in suite.cases
        if (t.id, c.name, r) not in done
    ]


async def run_samples(
    suite: Suite,
    client: EvalClient,
    todo: list[tuple[Target, Case, int]],
    on_sample: Callable[[Sample, bool], None],
) -> list[Sample]:
    """Run ``todo`` with at most ``suite.concurrency`` samples in flight (a sample's
    grading, judge calls included, inside its slot); ``on_sample(sample, reached)`` as
    each finishes."""
    slots = asyncio.Semaphore(suite.concurrency)
    finished: list[Sample] = []

    async def one(target: Target, case: Case, repeat: int) -> None:
        async with slots:
            reply_sample = await run_sample(client, target, case, repeat)
        finished.append(reply_sample)
        reached = not (reply_sample.status is None and _connect_failed(reply_sample))
        on_sample(reply_sample, reached)

    await asyncio.gather(*(one(t, c, r) for t, c, r in todo))
    return finished


def _connect_failed(sample: Sample) -> bool:
    return sample.error is not None and sample.error.startswith(("ConnectError", "ConnectTimeout"))


@dataclass
class Outcome:
    document: dict[str, Any]
    resumed: int  # samples taken from the checkpoint
    discarded: int  # samples of an earlier run dropped by starting over
    ran: int


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write ``document`` whole or not at all (a temporary file renamed over)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def progress_bar(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )


async def evaluate(
    suite: Suite,
    client: EvalClient,
    output: Path,
    *,
    resume: bool = False,
    progress: bool = True,
) -> Outcome:
    """Run ``suite`` on the server behind ``client``, write the result file ``output``
    (its checkpoint beside it while running) and return the document.

    ``ServerUnreachable`` before any sample when no ocak answers, or after, when none of
    this run's requests reached it (the checkpoint is kept for ``--resume``)."""
    await client.preflight()
    checkpoint = Checkpoint(checkpoint_path(output), suite.hash, suite.name)
    done = checkpoint.start(resume)
    samples: dict[Key, Sample] = dict(done)
    todo = plan(suite, done)
    started, clock = now_iso(), time.monotonic()
    failed = sum(not s.passed for s in done.values())
    reached_any = False
    try:
        with progress_bar(progress) as bar:
            task = bar.add_task(suite.name, total=suite.samples, completed=len(done), failed=failed)

            def on_sample(sample: Sample, reached: bool) -> None:
                nonlocal failed, reached_any
                samples[sample.key] = sample
                if reached:
                    reached_any = True
                    checkpoint.append(sample)
                failed += not sample.passed
                bar.update(task, advance=1, failed=failed)

            await run_samples(suite, client, todo, on_sample)
    finally:
        checkpoint.close()
    if todo and not reached_any:
        raise ServerUnreachable(
            f"none of the {len(todo)} requests reached ocak at {client.url} "
            f"(the checkpoint {checkpoint.path} keeps what was done: rerun with --resume)"
        )
    document = build_document(
        suite,
        samples,
        server=client.url,
        started_at=started,
        finished_at=now_iso(),
        duration_s=time.monotonic() - clock,
    )
    document["resumed_samples"] = len(done)
    write_json(output, document)
    if all(_connect_failed(s) is False for s in samples.values()):
        checkpoint.remove()
    return Outcome(document, len(done), checkpoint.discarded, len(todo))
