"""Fine-tuning through the serving layer: OpenAI's files and jobs, one worker at a time.

Files are checked line by line when uploaded (``tuning.data``), so a job is refused at
creation for a file that could not train; a job's base model is checked then too
(``tuning.base.find_base``). Jobs run one at a time, in the order they were created, each
in a worker process (``python -m ocak.tuning.worker``) at low CPU priority with bounded
threads, so the server keeps answering while it trains. The worker's JSON lines become
the job's events (a message per stage, metrics per step) and checkpoints; its adapter
lands in the model store as a folder put in place whole, under a portable name
(``ft-BASE-SUFFIX-ID``), with the job's ``fine_tuned_model`` (``ft:BASE:ocak:SUFFIX:ID``)
as its display name, so both name it in a chat request.

A restart does not resume a job: one that was running when the server stopped is
``failed`` with a message saying so (its partial work is removed by the next run), and
queued jobs run after the restart. Cancelling stops the worker before its next step;
nothing is written to the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import shutil
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ocak.config import Settings
from ocak.errors import Conflict, InvalidRequest, OcakError
from ocak.evals.suite import SuiteError, parse_suite
from ocak.models.manifest import Manifest
from ocak.models.store import StoreBusy
from ocak.tuning.base import find_base
from ocak.tuning.data import parse_training_data
from ocak.tuning.jobs import ACTIVE, FINISHED, Checkpoint, FileInfo, Job, TuningStore, new_id
from ocak.tuning.spec import Hyperparameters, TuneSpec, resolve
from ocak.tuning.train import merged_dir, remove_stale
from ocak.tuning.worker import command

log = logging.getLogger("ocak.tuning")
PURPOSES = ("fine-tune",)
ORG = "ocak"  # the organization part of a fine-tuned model's name
_SUFFIX = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
STOP_GRACE = 30.0  # seconds a cancelled worker has to finish its step before it is killed
# Runs an eval suite (``ocak eval``'s, as a mapping) on models; writes and returns its
# result document. The server provides one over its own API (server/tuning_eval.py).
Evaluate = Callable[[dict[str, Any], list[str], Path], Awaitable[dict[str, Any]]]


def check_inline_suite(data: object, models: list[str], folder: Path) -> dict[str, Any]:
    """A job's eval suite, checked when the job is created (400 naming the problem)."""
    if not isinstance(data, dict):
        raise InvalidRequest("eval is an eval suite (docs/evals.md), as an object.", param="eval")
    if "cases_file" in data:
        raise SuiteError(
            "A job's eval suite holds its cases inline (cases_file names a file on the "
            "server, which a job cannot).",
            param="eval.cases_file",
        )
    parse_suite({"name": "fine-tuning eval", **data, "models": models}, folder / "suite.yaml")
    return {"name": "fine-tuning eval", **data}


def eval_summary(document: dict[str, Any], base: str, tuned: str) -> dict[str, Any]:
    """The pass rates of the base and the tuned model, as the job's result carries them."""
    rates = {t["model"]: t for t in document.get("targets", [])}

    def of(model: str) -> dict[str, Any]:
        t = rates.get(model) or {}
        return {"model": model, "pass_rate": t.get("pass_rate"), "samples": t.get("samples"),
                "wilson_95": t.get("wilson_95")}  # fmt: skip

    return {"suite": (document.get("suite") or {}).get("name"), "base": of(base),
            "fine_tuned": of(tuned)}  # fmt: skip


def fine_tuned_names(base: str, suffix: str | None, job_id: str) -> tuple[str, str]:
    """(display name, store name): ``ft:default:ocak:catch:1a2b3c4d`` and a file name."""
    short = job_id.split("-", 1)[-1][:8]
    display = f"ft:{base}:{ORG}:{suffix or ''}:{short}"
    portable = re.sub(r"[^A-Za-z0-9._-]+", "-", f"ft-{base}-{suffix or 'tuned'}-{short}")
    return display, portable.strip("-.")[:64]


def _kill(proc: asyncio.subprocess.Process) -> None:
    """A worker that did not stop within the grace after SIGTERM."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


def check_suffix(suffix: str | None) -> None:
    if suffix is not None and not _SUFFIX.fullmatch(suffix):
        raise InvalidRequest(
            "suffix: 1-40 lowercase letters, digits and '-', starting with a letter or digit.",
            param="suffix",
        )


class FineTuning:
    """Files, jobs and the one runner (see the module doc)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.path = settings.data_dir / "tuning.db"
        self.work = settings.data_dir / "tuning-jobs"
        self._store: TuningStore | None = None
        self._opening = threading.Lock()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._running: tuple[str, asyncio.subprocess.Process] | None = None
        self._cancelled: set[str] = set()
        self.evaluator: Evaluate | None = None  # set by the app: how a job's eval runs

    @property
    def store(self) -> TuningStore:
        with self._opening:
            if self._store is None:
                self._store = TuningStore(self.path)
            return self._store

    # -- the runner --------------------------------------------------------------------

    def start(self) -> None:
        """Fail the jobs a stopped server left running, then run the queue (only when a
        tuning database exists: a server that never tuned makes no file)."""
        if not self.path.exists():
            return
        self._recover()
        self._ensure_runner()

    def _recover(self) -> None:
        for job in self.store.jobs(("running",)):
            self.store.finish(
                job.id, "failed",
                error={"code": "server_restarted", "param": None,
                       "message": "The server stopped while this job was training; it was "
                       "not resumed. Create a new job to train again."},
            )  # fmt: skip
            self.store.event(job.id, "The server stopped during training.", level="error")
            if job.adapter is not None:  # what its worker left, if it was killed too
                adapter = self.settings.model_dir / job.adapter
                for folder in (adapter, merged_dir(adapter)):
                    with contextlib.suppress(StoreBusy):  # still stopping: it cleans up itself
                        remove_stale(folder)
        for job in self.store.jobs(("validating_files",)):
            self.store.update(job.id, status="queued")

    def _ensure_runner(self) -> None:
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._loop(), name="ocak-tuning")
        assert self._wake is not None
        self._wake.set()

    async def close(self) -> None:
        """Stop the runner; a job in progress is stopped and marked failed (not resumed)."""
        running = self._running
        if running is not None:
            job_id, proc = running
            await self._stop(proc)
            with contextlib.suppress(OcakError):
                self.store.finish(
                    job_id, "failed",
                    error={"code": "server_stopped", "param": None,
                           "message": "The server stopped while this job was training."},
                )  # fmt: skip
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._store is not None:
            self._store.close()
            self._store = None

    async def _loop(self) -> None:
        assert self._wake is not None
        while True:
            queued = sorted(self.store.jobs(("queued",)), key=lambda j: j.created_at)
            if not queued:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await self._run(queued[0])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug here must fail the job, not the runner
                log.exception("tuning job %s failed", queued[0].id)
                self.store.finish(
                    queued[0].id, "failed",
                    error={"code": "internal_error", "param": None,
                           "message": f"{type(exc).__name__}: {exc}"},
                )  # fmt: skip

    async def _run(self, job: Job) -> None:
        store = self.store
        job = store.update(job.id, status="running", started_at=time.time())
        store.event(job.id, "Fine-tuning job started.")
        folder = self.work / job.id
        folder.mkdir(parents=True, exist_ok=True)
        assert job.fine_tuned_model is not None and job.adapter is not None
        spec = TuneSpec(
            base=job.model,
            model_dir=str(self.settings.model_dir),
            training_file=str(store.file_path(job.training_file)),
            validation_file=(
                str(store.file_path(job.validation_file)) if job.validation_file else None
            ),
            hyperparameters=Hyperparameters.model_validate(job.hyperparameters),
            seed=job.seed,
            name=job.adapter,
            base_name=job.model,
            priority="low",
            threads=self.settings.tuning_threads,
            checkpoints=True,
            ctranslate2=job.merged is not None,
        )
        spec_path = folder / "spec.json"
        spec_path.write_text(spec.model_dump_json(indent=2), encoding="utf-8")
        out_dir = self.settings.model_dir / job.adapter
        with (folder / "worker.log").open("ab") as errors:
            proc = await asyncio.create_subprocess_exec(
                *command(spec_path, out_dir),
                stdout=asyncio.subprocess.PIPE,
                stderr=errors,
                stdin=asyncio.subprocess.DEVNULL,
            )
            self._running = (job.id, proc)
            try:
                last = await self._follow(job, proc)
                await proc.wait()
            finally:
                self._running = None
        await self._conclude(job, last, proc.returncode, out_dir)

    async def _follow(self, job: Job, proc: asyncio.subprocess.Process) -> dict[str, Any] | None:
        """The worker's events recorded as they come; its last (done, error, cancelled)."""
        assert proc.stdout is not None
        store, last = self.store, None
        async for raw in proc.stdout:
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            kind = event.get("event")
            if kind == "started":
                hp = event.get("hyperparameters") or {}
                names = ("n_epochs", "batch_size", "learning_rate_multiplier")
                resolved = {k: hp[k] for k in names if k in hp}
                if resolved:
                    store.update(job.id, hyperparameters=resolved)
                store.event(
                    job.id,
                    f"Training started: {event.get('total_steps')} steps over "
                    f"{event.get('examples')} examples.",
                    data={k: event.get(k) for k in ("total_steps", "examples", "estimate")},
                )
            elif kind == "step":
                store.event(
                    job.id,
                    f"Step {event.get('step')}/{event.get('total_steps')}: training loss="
                    f"{event.get('loss', 0.0):.4f}",
                    type="metrics",
                    data={"step": event.get("step"), "total_steps": event.get("total_steps"),
                          "train_loss": event.get("loss"), "epoch": event.get("epoch"),
                          "elapsed": event.get("elapsed")},
                )  # fmt: skip
            elif kind == "epoch":
                metrics = {"step": event.get("step"), "train_loss": event.get("loss"),
                           "valid_loss": event.get("valid_loss")}  # fmt: skip
                if event.get("checkpoint"):
                    step = int(event.get("step") or 0)
                    store.add_checkpoint(
                        Checkpoint(new_id("ftckpt"), job.id, time.time(), step,
                                   f"{job.fine_tuned_model}:ckpt-step-{step}", metrics)
                    )  # fmt: skip
                store.event(job.id, f"Epoch {event.get('epoch')} done.", data=metrics)
            elif kind in ("done", "error", "cancelled"):
                last = event
        return last

    async def _conclude(
        self, job: Job, last: dict[str, Any] | None, code: int | None, out_dir: Path
    ) -> None:
        store = self.store
        kind = (last or {}).get("event")
        if job.id in self._cancelled or kind == "cancelled":
            self._cancelled.discard(job.id)
            if kind == "done":  # it finished before the signal came: not served after all
                shutil.rmtree(out_dir, ignore_errors=True)
                if job.merged is not None:
                    shutil.rmtree(merged_dir(out_dir), ignore_errors=True)
            store.finish(job.id, "cancelled")
            store.event(job.id, "Fine-tuning job cancelled; nothing was stored.")
        elif kind == "done" and code == 0:
            manifest = Manifest.read(out_dir)
            manifest.display_name = job.fine_tuned_model
            manifest.write(out_dir)
            record = (last or {}).get("record") or {}
            store.event(job.id, f"New fine-tuned model created: {job.fine_tuned_model}")
            if job.merged is not None:
                store.event(job.id, f"Merged model for CTranslate2 created: {job.merged}")
            result = await self._evaluate(job) if job.eval_suite else None
            store.finish(
                job.id, "succeeded", trained_tokens=record.get("trained_tokens"),
                eval_result=result,
            )  # fmt: skip
            store.event(job.id, "The job has successfully completed.")
        else:
            error = (last or {}).get("error") or {
                "message": f"The training worker ended without a result (exit code {code}).",
                "code": "worker_failed",
            }
            body = {"code": error.get("code") or "training_failed",
                    "message": error.get("message"), "param": error.get("param")}  # fmt: skip
            store.finish(job.id, "failed", error=body)
            store.event(job.id, f"Fine-tuning failed: {body['message']}", level="error")

    async def _evaluate(self, job: Job) -> dict[str, Any]:
        """The job's suite on the base and the tuned model: both pass rates, or the error."""
        assert job.eval_suite is not None and job.fine_tuned_model is not None
        if self.evaluator is None:
            return {"error": "this server runs no evals"}
        self.store.event(job.id, "Evaluating the base and the fine-tuned model.")
        models = [job.model, job.fine_tuned_model]
        output = self.work / job.id / "eval.json"
        try:
            document = await self.evaluator(json.loads(job.eval_suite), models, output)
        except OcakError as exc:
            self.store.event(job.id, f"The eval could not run: {exc.message}", level="warn")
            return {"error": exc.message}
        summary = eval_summary(document, *models)
        self.store.event(
            job.id,
            f"Eval {summary['suite']}: base {summary['base']['pass_rate']}, fine-tuned "
            f"{summary['fine_tuned']['pass_rate']}",
            data=summary,
        )
        return summary

    async def _stop(self, proc: asyncio.subprocess.Process) -> None:
        """SIGTERM (the worker stops before its next step), then SIGKILL after a grace."""
        if proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_GRACE)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    # -- files -------------------------------------------------------------------------

    async def upload(self, filename: str, data: bytes, purpose: str) -> FileInfo:
        """A training file, checked line by line (a 400 naming the line) before it is kept."""
        if purpose not in PURPOSES:
            raise InvalidRequest(
                f"purpose '{purpose}' is not supported here; use one of: {', '.join(PURPOSES)}.",
                param="purpose",
            )
        if not filename:
            raise InvalidRequest("The upload needs a file name.", param="file")
        parsed = await asyncio.to_thread(
            parse_training_data, data, max_bytes=self.settings.max_tuning_file_bytes
        )
        info = FileInfo(new_id("file"), filename[:255], purpose, len(data), time.time(),
                        len(parsed.examples))  # fmt: skip
        return await asyncio.to_thread(self.store.add_file, info, data)

    # -- jobs --------------------------------------------------------------------------

    async def create(
        self,
        model: str,
        training_file: str,
        *,
        validation_file: str | None = None,
        suffix: str | None = None,
        seed: int | None = None,
        hyperparameters: Hyperparameters | None = None,
        metadata: dict[str, str] | None = None,
        eval_suite: dict[str, Any] | None = None,
        ctranslate2: bool = False,
    ) -> Job:
        """A queued job, after its files, base model and eval suite were checked."""
        check_suffix(suffix)
        store = self.store
        train = store.file(training_file)
        if validation_file is not None:
            store.file(validation_file)
        await asyncio.to_thread(find_base, model, self.settings.model_dir)
        hp = hyperparameters or Hyperparameters()
        resolve(hp, train.examples)  # out-of-range numbers are refused now, not in the worker
        job_id = new_id("ftjob")
        display, portable = fine_tuned_names(model, suffix, job_id)
        merged = merged_dir(Path(portable)).name if ctranslate2 else None
        for name in (portable, merged):
            if name is not None and self.settings.model_dir.joinpath(name).exists():
                raise Conflict(f"The model store already has '{name}'.", param="suffix")
        suite = None
        if eval_suite is not None:
            suite = check_inline_suite(eval_suite, [model, display], self.work / job_id)
        job = Job(
            job_id, time.time(), model, training_file, validation_file, suffix,
            seed if seed is not None else int(time.time()) % (2**31 - 1),
            hp.model_dump(), "supervised", "queued", display, portable, metadata=metadata,
            eval_suite=json.dumps(suite) if suite is not None else None, merged=merged,
        )  # fmt: skip
        store.add_job(job)
        store.event(job_id, f"Created fine-tuning job: {job_id}")
        self._recover_once()
        self._ensure_runner()
        return job

    def _recover_once(self) -> None:
        if self._task is None:  # the first job of a server that had no tuning file
            self._recover()

    async def cancel(self, job_id: str) -> Job:
        """Stop a queued or running job; a finished one is a 409."""
        job = self.store.job(job_id)
        if job.status in FINISHED:
            raise Conflict(
                f"The job is {job.status}; only queued or running jobs can be cancelled.",
                param="fine_tuning_job_id",
            )
        running = self._running
        if running is not None and running[0] == job_id:
            self._cancelled.add(job_id)
            proc = running[1]
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            asyncio.get_running_loop().call_later(STOP_GRACE, _kill, proc)
            self.store.event(job_id, "Cancelled: the worker stops before its next step.")
            return self.store.finish(job_id, "cancelled")
        if job.status in ACTIVE:
            self.store.finish(job_id, "cancelled")
            self.store.event(job_id, "Fine-tuning job cancelled before it started.")
        return self.store.job(job_id)
