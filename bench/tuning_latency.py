"""``python -m bench tuning_latency``: chat latency while a fine-tuning job trains.

One ``ocak serve`` on the default model; the same short chat request (greedy, 16
tokens, one at a time) is timed idle, then while a LoRA job of the default model trains
in its worker (the job API, as a client starts it: low priority, bounded threads), then
idle again; rounds interleave idle and training so a shift of the shared machine shows
in both. The target (issue 21): p50 during training within 2x of idle.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import Process, free_port, header, percentile, table, write_section

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

BODY = {"model": "default", "messages": [{"role": "user", "content": "Name a colour."}],
        "max_tokens": 16, "temperature": 0}  # fmt: skip
SAMPLES = 15  # requests per phase


def timed(http: httpx.Client, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        r = http.post("/v1/chat/completions", json=BODY)
        r.raise_for_status()
        out.append((time.perf_counter() - start) * 1000)
    return out


def job_running(http: httpx.Client, job_id: str) -> bool:
    """The job is taking optimizer steps (its latest event is a step's metrics)."""
    events = http.get(f"/v1/fine_tuning/jobs/{job_id}/events", params={"limit": 1}).json()
    return bool(events["data"]) and events["data"][0]["type"] == "metrics"


def start_job(http: httpx.Client, data: Path) -> str:
    with data.open("rb") as f:
        file_id = http.post("/v1/files", files={"file": ("t.jsonl", f)},
                            data={"purpose": "fine-tune"}).json()["id"]  # fmt: skip
    body = {"model": "default", "training_file": file_id, "hyperparameters": {"n_epochs": 6}}
    job: dict[str, Any] = http.post("/v1/fine_tuning/jobs", json=body).json()
    return str(job["id"])


def main() -> None:
    from tuning_task import write_training_file

    work = Path(tempfile.mkdtemp(prefix="ocak-bench-tuning-latency-"))
    data = write_training_file(work / "train.jsonl")
    port = free_port()
    os.environ["OCAK_DATA_DIR"] = str(work / "data")
    server = Process("tuning-latency", [sys.executable, "-m", "ocak", "serve", "--port",
                     str(port), "--ctx-size", "512"], port).wait()  # fmt: skip
    phases: dict[str, list[float]] = {"idle": [], "training": []}
    rounds: list[tuple[str, float, float]] = []
    try:
        with httpx.Client(base_url=server.url, timeout=120) as http:
            timed(http, 3)  # warm: the model loaded, its prompt cached
            for n in range(2):
                idle = timed(http, SAMPLES)
                job = start_job(http, data)
                deadline = time.monotonic() + 600
                while not job_running(http, job) and time.monotonic() < deadline:
                    time.sleep(0.5)
                busy = timed(http, SAMPLES)
                still = job_running(http, job)
                http.post(f"/v1/fine_tuning/jobs/{job}/cancel")
                time.sleep(3)  # the worker stops before its next step
                phases["idle"] += idle
                phases["training"] += busy
                ratio = statistics.median(busy) / statistics.median(idle)
                rounds.append((f"round {n + 1}{'' if still else ' (job ended early)'}",
                               statistics.median(idle), statistics.median(busy)))  # fmt: skip
                print(f"round {n + 1}: idle p50 {rounds[-1][1]:.0f} ms, training p50 "
                      f"{rounds[-1][2]:.0f} ms ({ratio:.2f}x)", flush=True)  # fmt: skip
    finally:
        server.stop()
    rows = [[name, idle, busy, busy / idle] for name, idle, busy in rounds]
    idle_all, busy_all = phases["idle"], phases["training"]
    rows.append(["all", percentile(idle_all, 50), percentile(busy_all, 50),
                 percentile(busy_all, 50) / percentile(idle_all, 50)])  # fmt: skip
    body = header("python -m bench tuning_latency", "torch", "peft", "llama-cpp-python")
    body += (
        f"\nOne `ocak serve` on the default model; a greedy 16-token chat request, one at a "
        f"time, {SAMPLES} per phase, idle and then while a LoRA job of the default model "
        "trains (started over `/v1/fine_tuning/jobs`: its worker at nice 10 with half the "
        "cores' threads), two rounds. Target: training p50 within 2x of idle.\n\n"
    )
    body += table(["", "idle p50 (ms)", "training p50 (ms)", "ratio"], rows)
    body += f"\n\np90: idle {percentile(idle_all, 90):.0f} ms, training "
    body += f"{percentile(busy_all, 90):.0f} ms.\n"
    write_section("tuning-latency", "Chat latency while a fine-tuning job trains", body)
    print(json.dumps({"rounds": rounds}), flush=True)


if __name__ == "__main__":
    main()
