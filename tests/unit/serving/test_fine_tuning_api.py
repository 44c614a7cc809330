"""OpenAI's files and fine-tuning jobs API without training: uploads checked line by line,
jobs refused for what could never train, the administrator scope, a job the server was
killed during marked failed at the next start, a queued job cancelled. The training
itself is tests/e2e/test_tuning_api.py's, on the real default model."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx

from app_helpers import served
from ocak.config import Settings
from ocak.engines.fake import FakeEngine
from ocak.tuning.jobs import Job, TuningStore

GOOD = (
    json.dumps({"messages": [{"role": "user", "content": "Hi"},
                             {"role": "assistant", "content": "Hello. By the old oak!"}]})
    + "\n"
)  # fmt: skip


async def upload(c: httpx.AsyncClient, data: bytes, purpose: str = "fine-tune") -> httpx.Response:
    return await c.post(
        "/v1/files", files={"file": ("train.jsonl", data)}, data={"purpose": purpose}
    )


def run(tmp_path: Path, check: Any, **settings: Any) -> None:
    async def main() -> None:
        async with served(tmp_path, [FakeEngine("default")], **settings) as s:
            await check(s.client)

    asyncio.run(main())


def test_uploads_are_checked_line_by_line(tmp_path: Path) -> None:
    async def check(c: httpx.AsyncClient) -> None:
        r = await upload(c, GOOD.encode() * 3)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "file" and body["purpose"] == "fine-tune"
        assert body["id"].startswith("file-") and body["bytes"] == len(GOOD.encode()) * 3
        listed = (await c.get("/v1/files")).json()["data"]
        assert [f["id"] for f in listed] == [body["id"]]
        content = await c.get(f"/v1/files/{body['id']}/content")
        assert content.content == GOOD.encode() * 3

        bad_role = GOOD + json.dumps({"messages": [{"role": "wizard", "content": "x"}]}) + "\n"
        r = await upload(c, bad_role.encode())
        assert r.status_code == 400, r.text
        assert "line 2" in r.json()["error"]["message"] + (r.json()["error"]["param"] or "")
        r = await upload(c, b"{not json\n")
        assert r.status_code == 400 and "line 1" in json.dumps(r.json()), r.text
        r = await upload(c, GOOD.encode(), purpose="assistants")
        assert r.status_code == 400 and r.json()["error"]["param"] == "purpose", r.text
        r = await upload(c, GOOD.encode() * 2000)  # over max_tuning_file_bytes
        assert r.status_code == 413, r.text
        assert len((await c.get("/v1/files")).json()["data"]) == 1  # none of them kept

    run(tmp_path, check, max_tuning_file_bytes=64 * 1024)


def test_jobs_that_could_never_train_are_refused_when_created(tmp_path: Path) -> None:
    async def check(c: httpx.AsyncClient) -> None:
        file_id = (await upload(c, GOOD.encode())).json()["id"]
        cases = [
            ({"model": "nope", "training_file": file_id}, 404, "model"),
            ({"model": "default", "training_file": "file-missing"}, 404, "file"),
            ({"model": "default", "training_file": file_id, "suffix": "Bad Suffix!"}, 400,
             "suffix"),
            ({"model": "default", "training_file": file_id,
              "method": {"type": "supervised",
                         "supervised": {"hyperparameters": {"n_epochs": 500}}}}, 400, "n_epochs"),
            ({"model": "default", "training_file": file_id, "method": {"type": "dpo"}}, 400,
             "method"),
        ]  # fmt: skip
        for body, status, named in cases:
            r = await c.post("/v1/fine_tuning/jobs", json=body)
            assert r.status_code == status, (body, r.text)
            assert named in json.dumps(r.json()["error"]), (body, r.text)
        assert (await c.get("/v1/fine_tuning/jobs")).json()["data"] == []

    run(tmp_path, check)  # "default" as a base is the bundled GGUF, whatever engine serves


def test_changing_needs_the_administrator_scope(tmp_path: Path) -> None:
    async def main() -> None:
        async with served(tmp_path, [FakeEngine("default")], key=True) as s:
            r = await upload(s.client, GOOD.encode())
            assert r.status_code == 403, r.text
            r = await s.client.post(
                "/v1/fine_tuning/jobs", json={"model": "default", "training_file": "file-x"}
            )
            assert r.status_code == 403, r.text
            assert (await s.client.get("/v1/fine_tuning/jobs")).status_code == 200

    asyncio.run(main())


def _job(job_id: str, status: Any, created: float) -> Job:
    return Job(job_id, created, "default", "file-x", None, None, 1, {}, "supervised", status,
               f"ft:default:ocak::{job_id}", f"ft-default-{job_id}")  # fmt: skip


def test_a_job_interrupted_by_a_restart_is_failed_and_a_queued_one_can_be_cancelled(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path)
    store = TuningStore(settings.data_dir / "tuning.db")
    store.add_job(_job("ftjob-interrupted", "running", time.time() - 10))
    store.close()
    # What its worker left when it was killed with the server (a dead process's staging).
    stale = settings.model_dir / ".ft-default-ftjob-interrupted.tuning-4000000"
    (stale / "checkpoints").mkdir(parents=True)

    async def check(c: httpx.AsyncClient) -> None:
        r = await c.get("/v1/fine_tuning/jobs/ftjob-interrupted")
        job = r.json()
        assert job["status"] == "failed" and job["error"]["code"] == "server_restarted", job
        assert job["fine_tuned_model"] is None
        events = (await c.get("/v1/fine_tuning/jobs/ftjob-interrupted/events")).json()["data"]
        assert events[0]["level"] == "error"
        r = await c.post("/v1/fine_tuning/jobs/ftjob-interrupted/cancel")
        assert r.status_code == 409, r.text
        r = await c.get("/v1/fine_tuning/jobs/ftjob-nope")
        assert r.status_code == 404, r.text
        assert not stale.exists()

    run(tmp_path, check)
