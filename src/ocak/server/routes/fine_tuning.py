"""OpenAI's files and fine-tuning jobs API (``/v1/files``, ``/v1/fine_tuning/jobs``).

The shapes are OpenAI's, so ``client.files.create`` and ``client.fine_tuning.jobs.*`` of
the ``openai`` SDK work unchanged; the work is ``serving/tuning.py``'s. Uploading files
and creating or cancelling jobs change the machine: the administrator scope. Reading
them needs a key like any model request.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from ocak.errors import InvalidRequest
from ocak.server.auth import require_admin
from ocak.server.routes.admin import ERRORS
from ocak.server.services import get_state
from ocak.serving.tuning import FineTuning
from ocak.tuning.jobs import Checkpoint, Event, FileInfo, Job
from ocak.tuning.spec import Hyperparameters

router = APIRouter(tags=["fine-tuning"])
ADMIN = [Depends(require_admin)]
Limit = Annotated[int, Query(ge=1, le=100)]


class Supervised(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


class Method(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["supervised"] = Field(
        "supervised", description="Only supervised fine-tuning is trained here (not dpo)."
    )
    supervised: Supervised | None = None  # fmt: skip


class CreateJob(BaseModel):
    """OpenAI's ``POST /v1/fine_tuning/jobs`` body."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=200, description="The base model.")
    training_file: str = Field(min_length=1, max_length=64)
    validation_file: str | None = Field(None, max_length=64)
    suffix: str | None = Field(None, description="Up to 40 characters in the model's name.")
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    method: Method | None = None
    hyperparameters: Hyperparameters | None = Field(
        None, description="The older place of the hyperparameters (method.supervised's now)."
    )
    metadata: dict[str, str] | None = Field(None, max_length=16)
    integrations: list[Any] | None = Field(None, max_length=0, description="None supported.")
    eval: dict[str, Any] | None = Field(
        None,
        description="ocak's: an eval suite (docs/evals.md, cases inline) run on the base and "
        "the tuned model after training; the job's eval_result carries both pass rates.",
    )
    ctranslate2: bool = Field(
        False,
        description="ocak's: also merge the adapter into the base and convert the result for "
        "the CTranslate2 engine (int8 on CPU, float16 on GPU); the job's ctranslate2_model "
        "names it.",
    )


def service(request: Request) -> FineTuning:
    return get_state(request).tuning


def file_json(f: FileInfo) -> dict[str, Any]:
    return {"id": f.id, "object": "file", "bytes": f.bytes, "created_at": int(f.created_at),
            "filename": f.filename, "purpose": f.purpose, "status": "processed",
            "status_details": None, "expires_at": None}  # fmt: skip


def job_json(j: Job) -> dict[str, Any]:
    hp = j.hyperparameters
    return {
        "id": j.id,
        "object": "fine_tuning.job",
        "created_at": int(j.created_at),
        "finished_at": int(j.finished_at) if j.finished_at else None,
        "model": j.model,
        "fine_tuned_model": j.fine_tuned_model if j.status == "succeeded" else None,
        "organization_id": "ocak",
        "result_files": [],
        "status": j.status,
        "validation_file": j.validation_file,
        "training_file": j.training_file,
        "hyperparameters": hp,
        "method": {"type": "supervised", "supervised": {"hyperparameters": hp}},
        "trained_tokens": j.trained_tokens,
        "error": j.error,
        "seed": j.seed,
        "user_provided_suffix": j.suffix,
        "estimated_finish": None,
        "integrations": [],
        "metadata": j.metadata,
        "eval_result": j.eval_result,  # ocak's: the base's and the tuned model's pass rates
        "ctranslate2_model": j.merged if j.status == "succeeded" else None,  # ocak's
    }


def event_json(e: Event) -> dict[str, Any]:
    return {"id": e.id, "object": "fine_tuning.job.event", "created_at": int(e.created_at),
            "level": e.level, "message": e.message, "type": e.type, "data": e.data}  # fmt: skip


def checkpoint_json(c: Checkpoint) -> dict[str, Any]:
    return {"id": c.id, "object": "fine_tuning.job.checkpoint", "created_at": int(c.created_at),
            "fine_tuned_model_checkpoint": c.model, "fine_tuning_job_id": c.job,
            "step_number": c.step, "metrics": c.metrics}  # fmt: skip


def page(items: list[dict[str, Any]], after: str | None, limit: int) -> dict[str, Any]:
    """OpenAI's cursor page over ``items`` (newest first): those after the id ``after``."""
    if after is not None:
        ids = [i["id"] for i in items]
        items = items[ids.index(after) + 1 :] if after in ids else []
    return {"object": "list", "data": items[:limit], "has_more": len(items) > limit}


@router.post("/v1/files", responses=ERRORS, dependencies=ADMIN)
async def upload(
    request: Request, file: Annotated[UploadFile, File()], purpose: Annotated[str, Form()]
) -> dict[str, Any]:
    """Upload a training file (chat-format JSONL, checked line by line; administrator)."""
    data = await file.read()
    return file_json(await service(request).upload(file.filename or "", data, purpose))


@router.get("/v1/files", responses=ERRORS)
async def list_files(
    request: Request, purpose: str | None = None, after: str | None = None, limit: Limit = 100
) -> dict[str, Any]:
    """The uploaded files, newest first."""
    found = [file_json(f) for f in service(request).store.files(purpose)]
    return page(found, after, limit)


@router.get("/v1/files/{file_id}", responses=ERRORS)
async def get_file(file_id: str, request: Request) -> dict[str, Any]:
    return file_json(service(request).store.file(file_id))


@router.get("/v1/files/{file_id}/content", responses=ERRORS)
async def file_content(file_id: str, request: Request) -> Response:
    """The file's bytes, as uploaded."""
    store = service(request).store
    store.file(file_id)
    data = store.file_path(file_id).read_bytes()
    return Response(data, media_type="application/jsonl")


@router.delete("/v1/files/{file_id}", responses=ERRORS, dependencies=ADMIN)
async def delete_file(file_id: str, request: Request) -> dict[str, Any]:
    """Delete a file (administrator); jobs that used it keep their results."""
    service(request).store.delete_file(file_id)
    return {"id": file_id, "object": "file", "deleted": True}


@router.post("/v1/fine_tuning/jobs", responses=ERRORS, dependencies=ADMIN)
async def create_job(body: CreateJob, request: Request) -> dict[str, Any]:
    """Queue a LoRA fine-tuning job of a local model (administrator)."""
    hp = body.hyperparameters
    if body.method is not None and body.method.supervised is not None:
        if hp is not None:
            raise InvalidRequest(
                "Give the hyperparameters in method.supervised or at the top, not both.",
                param="hyperparameters",
            )
        hp = body.method.supervised.hyperparameters
    job = await service(request).create(
        body.model, body.training_file, validation_file=body.validation_file,
        suffix=body.suffix, seed=body.seed, hyperparameters=hp, metadata=body.metadata,
        eval_suite=body.eval, ctranslate2=body.ctranslate2,
    )  # fmt: skip
    return job_json(job)


@router.get("/v1/fine_tuning/jobs", responses=ERRORS)
async def list_jobs(request: Request, after: str | None = None, limit: Limit = 20) -> Any:
    """The jobs, newest first."""
    return page([job_json(j) for j in service(request).store.jobs()], after, limit)


@router.get("/v1/fine_tuning/jobs/{job_id}", responses=ERRORS)
async def get_job(job_id: str, request: Request) -> dict[str, Any]:
    return job_json(service(request).store.job(job_id))


@router.post("/v1/fine_tuning/jobs/{job_id}/cancel", responses=ERRORS, dependencies=ADMIN)
async def cancel_job(job_id: str, request: Request) -> dict[str, Any]:
    """Cancel a queued or running job (administrator): it stops before its next step and
    stores nothing."""
    return job_json(await service(request).cancel(job_id))


@router.get("/v1/fine_tuning/jobs/{job_id}/events", responses=ERRORS)
async def job_events(
    job_id: str, request: Request, after: str | None = None, limit: Limit = 20
) -> dict[str, Any]:
    """The job's events, newest first: stages, and each step's training loss."""
    found = service(request).store.events(job_id, after=after, limit=limit + 1)
    data = [event_json(e) for e in found]
    return {"object": "list", "data": data[:limit], "has_more": len(data) > limit}


@router.get("/v1/fine_tuning/jobs/{job_id}/checkpoints", responses=ERRORS)
async def job_checkpoints(
    job_id: str, request: Request, after: str | None = None, limit: Limit = 10
) -> dict[str, Any]:
    """The adapters saved at the end of each epoch but the last, newest first."""
    found = [checkpoint_json(c) for c in service(request).store.checkpoints(job_id)]
    return page(found, after, limit)
