"""``ocak tune DATA.jsonl --model NAME``: a LoRA fine-tuning job on a running ocak.

The same path as OpenAI's SDK takes (``/v1/files``, then ``/v1/fine_tuning/jobs``), so
the server runs the job at its priority and one at a time, and what the command shows
is what any client would see: a progress bar from the job's events, then the model's
name (``ft:BASE:ocak:SUFFIX:ID``) to use in requests. Ctrl-C cancels the job. Exit codes:
0 succeeded, 1 failed or cancelled, 2 refused (a bad file, an unknown model, no server).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ocak.cli.common import err_console, fail

POLL = 1.0  # seconds between looks at the job


def _error(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        return str(error["message"] if isinstance(error, dict) else error)
    except (ValueError, KeyError, TypeError):
        return response.text[:300] or response.reason_phrase


def _checked(response: httpx.Response, what: str) -> dict[str, Any]:
    if response.status_code >= 400:
        fail(f"{what}: {_error(response)}", 2)
    body: dict[str, Any] = response.json()
    return body


def tune(
    data: Annotated[Path, typer.Argument(metavar="DATA.jsonl", help="Chat-format JSONL.")],
    model: Annotated[str, typer.Option("--model", "-m", help="The base model.")] = "default",
    suffix: Annotated[str | None, typer.Option(help="A word in the tuned model's name.")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Passes over the data.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Examples per step.")] = None,
    lr_multiplier: Annotated[
        float | None, typer.Option("--lr-multiplier", help="Times the base LoRA rate 2e-4.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="For a repeatable run.")] = None,
    validation: Annotated[
        Path | None, typer.Option("--validation", help="A held-out JSONL file.")
    ] = None,
    ctranslate2: Annotated[
        bool,
        typer.Option("--ctranslate2", help="Also write the merged model for CTranslate2."),
    ] = False,
    url: Annotated[
        str, typer.Option(envvar="OCAK_URL", help="The ocak server.")
    ] = "http://127.0.0.1:8000",
    key: Annotated[
        str | None,
        typer.Option("--key", envvar="OCAK_API_KEY", help="An administrator key, if it has keys."),
    ] = None,
) -> None:
    """Fine-tune a LoRA adapter of a local model on DATA.jsonl, with a progress bar."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=120) as http:
        try:
            training = _upload(http, data)
            validation_id = _upload(http, validation) if validation else None
        except httpx.HTTPError as exc:
            fail(f"cannot reach ocak at {url}: {exc} (is `ocak serve` running?)", 2)
        hp = {
            k: v
            for k, v in (
                ("n_epochs", epochs),
                ("batch_size", batch_size),
                ("learning_rate_multiplier", lr_multiplier),
            )
            if v is not None
        }
        body: dict[str, Any] = {"model": model, "training_file": training, "suffix": suffix,
                                "seed": seed, "validation_file": validation_id,
                                "ctranslate2": ctranslate2,
                                "method": {"type": "supervised",
                                           "supervised": {"hyperparameters": hp}}}  # fmt: skip
        job = _checked(http.post("/v1/fine_tuning/jobs", json=body), "the job was refused")
        err_console.print(f"job {job['id']}: training {model} on {data.name}")
        try:
            job = _follow(http, job["id"])
        except KeyboardInterrupt:
            http.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel")
            err_console.print("cancelled: nothing was stored")
            raise typer.Exit(1) from None
    if job["status"] != "succeeded":
        why = (job.get("error") or {}).get("message") or job["status"]
        fail(f"the job {job['status']}: {why}", 1)
    print(job["fine_tuned_model"])
    if job.get("ctranslate2_model"):
        print(job["ctranslate2_model"])


def _upload(http: httpx.Client, path: Path) -> str:
    try:
        content = path.read_bytes()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}", 2)
    files = {"file": (path.name, content, "application/jsonl")}
    reply = http.post("/v1/files", files=files, data={"purpose": "fine-tune"})
    return str(_checked(reply, f"{path.name} was refused")["id"])


def _follow(http: httpx.Client, job_id: str) -> dict[str, Any]:
    """The job polled until it ends, its steps on a progress bar; the job as it ended."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=err_console, transient=False) as bar:
        task = bar.add_task("queued", total=None, loss="-")
        while True:
            job = _checked(http.get(f"/v1/fine_tuning/jobs/{job_id}"), "the job")
            events = _checked(
                http.get(f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 1}), "events"
            )["data"]
            latest = (events[0].get("data") or {}) if events else {}
            if latest.get("total_steps"):
                loss = latest.get("train_loss")
                shown = f"{loss:.4f}" if isinstance(loss, int | float) else "-"
                step = latest.get("step") or 0
                bar.update(task, description="training", total=latest["total_steps"],
                           completed=step, loss=shown)  # fmt: skip
            elif job["status"] == "running":
                bar.update(task, description="preparing")
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return job
            time.sleep(POLL)
