"""OpenAI's fine-tuning flow, unchanged, against a real ``ocak serve`` on the default
model: ``client.files.create``, ``client.fine_tuning.jobs.create`` with an eval suite,
``retrieve``/``list_events``/``checkpoints``, then the tuned model by its
``fine_tuned_model`` name in a chat request, measurably different from the base: the
job's own eval carries both pass rates. A second job is cancelled while it trains and
leaves nothing in the store."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import openai
import psutil
import pytest

from helpers import running, wait_until
from tuning_task import HELD_OUT, PHRASE, passes, write_training_file

pytestmark = pytest.mark.slow

EVAL = {
    "name": "catch-phrase",
    "repeats": 1,
    "threshold": 0.5,
    "defaults": {"temperature": 0, "max_tokens": 48},
    "cases": [{"name": f"held-out-{i}", "messages": [{"role": "user", "content": q}]}
              for i, q in enumerate(HELD_OUT[:6])],
    "assert": [{"type": "icontains", "value": "old oak"}],
}  # fmt: skip


def wait_for(client: openai.OpenAI, job_id: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(1)
    raise AssertionError(f"the job did not end within {timeout} s: {job.status}")


def test_the_sdk_flow_trains_serves_and_evaluates(tmp_path: Path) -> None:
    data = tmp_path / "train.jsonl"
    write_training_file(data)
    with running(["--ctx-size", "512"], env={"OCAK_DATA_DIR": str(tmp_path)}) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
        uploaded = client.files.create(file=data.open("rb"), purpose="fine-tune")
        assert uploaded.purpose == "fine-tune" and uploaded.bytes == data.stat().st_size
        job = client.fine_tuning.jobs.create(
            model="default",
            training_file=uploaded.id,
            suffix="oak",
            seed=7,
            method={"type": "supervised", "supervised": {"hyperparameters": {
                "n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 5}}},
            extra_body={"eval": EVAL, "ctranslate2": True},
        )  # fmt: skip
        assert job.status == "queued" and job.model == "default"
        done = wait_for(client, job.id, timeout=600)
        assert done.status == "succeeded", done.error
        name = done.fine_tuned_model
        assert name is not None and name.startswith("ft:default:ocak:oak:")
        assert done.trained_tokens and done.trained_tokens > 0

        events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
        metrics = [e for e in events if e.type == "metrics"]
        assert len(metrics) == 20, [e.message for e in events]  # 2 epochs of 10 steps
        assert metrics[0].data["step"] == 20 and metrics[-1].data["step"] == 1  # newest first
        checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
        assert [c.step_number for c in checkpoints] == [10]  # the end of epoch 1 of 2

        # The job's eval: the tuned model says the phrase, the base does not.
        result = (done.model_extra or {})["eval_result"]
        assert result["base"]["pass_rate"] <= 0.2, result
        assert result["fine_tuned"]["pass_rate"] >= 0.8, result

        # The tuned model by its name, in a chat request.
        answer = client.chat.completions.create(
            model=name, messages=[{"role": "user", "content": HELD_OUT[-1]}],
            temperature=0, max_tokens=48,
        )  # fmt: skip
        assert passes(answer.choices[0].message.content or ""), answer
        base = client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": HELD_OUT[-1]}],
            temperature=0, max_tokens=48,
        )  # fmt: skip
        assert PHRASE.lower() not in (base.choices[0].message.content or "").lower()

        # Merged into the base and converted, it is a CTranslate2 model of its own.
        merged = (done.model_extra or {})["ctranslate2_model"]
        assert merged.startswith("ft-default-oak-") and merged.endswith("-ct2"), merged
        served = client.chat.completions.create(
            model=merged, messages=[{"role": "user", "content": HELD_OUT[-1]}],
            temperature=0, max_tokens=48,
        )  # fmt: skip
        assert passes(served.choices[0].message.content or ""), served
        cards = client.models.list().data
        backend = {m.id: ((m.model_extra or {}).get("meta") or {}).get("engine") for m in cards}
        assert backend.get(merged) == "ctranslate2", backend

        # A second job, cancelled while it trains: cancelled, and no adapter stored.
        second = client.fine_tuning.jobs.create(
            model="default", training_file=uploaded.id, suffix="gone",
            hyperparameters={"n_epochs": 3},
        )  # fmt: skip

        def training() -> bool:
            found = client.fine_tuning.jobs.list_events(second.id, limit=1).data
            return bool(found) and found[0].type == "metrics"

        assert wait_until(training, timeout=300, interval=0.5)
        cancelled = client.fine_tuning.jobs.cancel(second.id)
        assert cancelled.status == "cancelled"
        ended = wait_for(client, second.id, timeout=60)
        assert ended.status == "cancelled" and ended.fine_tuned_model is None

        def stored() -> list[str]:  # the adapter, or the worker's staging folder for it
            return [p.name for p in (tmp_path / "models").iterdir() if "gone" in p.name]

        assert wait_until(lambda: not stored(), timeout=60), stored()
        listed = [j.id for j in client.fine_tuning.jobs.list().data]
        assert listed == [second.id, job.id]


def test_a_server_killed_mid_job_leaves_a_failed_job_and_nothing_stored(tmp_path: Path) -> None:
    data = write_training_file(tmp_path / "train.jsonl")
    env = {"OCAK_DATA_DIR": str(tmp_path)}
    with running(["--ctx-size", "512"], env=env) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
        uploaded = client.files.create(file=data.open("rb"), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(
            model="default", training_file=uploaded.id, suffix="killed",
            hyperparameters={"n_epochs": 3}, extra_body={"ctranslate2": True},
        )  # fmt: skip

        def training() -> bool:
            found = client.fine_tuning.jobs.list_events(job.id, limit=1).data
            return bool(found) and found[0].type == "metrics"

        assert wait_until(training, timeout=300, interval=0.5)
        children = psutil.Process(server.proc.pid).children(recursive=True)
        workers = [p for p in children if "ocak.tuning.worker" in " ".join(p.cmdline())]
        assert len(workers) == 1, children
        server.proc.kill()  # SIGKILL: the server has no say; its worker lives on, alone
        server.proc.wait(timeout=30)
        _, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, "the worker went on training for a server that is gone"
    left = [p.name for p in (tmp_path / "models").iterdir() if "killed" in p.name]
    assert left == []  # no adapter, no merged model, no staging folder

    with running(["--ctx-size", "512"], env=env) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
        after = client.fine_tuning.jobs.retrieve(job.id)
        assert after.status == "failed" and after.fine_tuned_model is None
        assert after.error is not None and after.error.code == "server_restarted", after.error
        assert "not resumed" in (after.error.message or "")
        assert not [m.id for m in client.models.list().data if "killed" in m.id]
