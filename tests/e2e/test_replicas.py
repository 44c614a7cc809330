"""Fault injection: three real ocak replicas behind one ocak gateway (an alias of the
three, least busy first, health-checked), a wave of streaming chats, and one replica
killed with SIGKILL while they run. A request the dead replica had accepted but not yet
answered is retried on another (none is lost); a stream it was already sending ends with
an error event, counted in the gateway's metrics; requests after the kill go to the
living replicas."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import ServerProcess, running, wait_until

pytestmark = pytest.mark.slow

N = 9  # streams in the wave


def stream(url: str, prompt: str, out: list[dict[str, Any]], first: threading.Event) -> None:
    body = {"model": "pool", "stream": True, "max_tokens": 64, "temperature": 0,
            "messages": [{"role": "user", "content": prompt}]}  # fmt: skip
    result: dict[str, Any] = {"chunks": 0, "error": None, "finished": False, "status": None}
    began = time.monotonic()
    try:
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as r:
            result["status"], result["backend"] = r.status_code, r.headers.get("x-ocak-backend")
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    result["error"] = event["error"]
                    break
                choice = event["choices"][0] if event.get("choices") else {}
                if choice.get("delta", {}).get("content"):
                    result["chunks"] += 1
                    first.set()
                if choice.get("finish_reason"):
                    result["finished"] = True
    except httpx.HTTPError as exc:
        result["error"] = {"message": f"transport: {exc}"}
    result["seconds"] = round(time.monotonic() - began, 1)
    out.append(result)


def test_a_replica_killed_under_load_loses_no_request_before_its_first_token(
    tmp_path: Path,
) -> None:
    # r1 decodes one sequence at a time: the others it is given wait in its queue, accepted
    # but not answered, when it dies.
    def replica(name: str, parallel: int) -> Any:
        # One decode thread each: three replicas on two cores, without their thread pools
        # spinning against each other (that made a wave take minutes instead of seconds).
        return running(["--parallel", str(parallel), "--threads", "1"],
                       env={"OCAK_DATA_DIR": str(tmp_path / name)})  # fmt: skip

    with replica("r1", 1) as r1, replica("r2", 4) as r2, replica("r3", 4) as r3:
        config = tmp_path / "gateway.yaml"
        providers = {f"r{i}": {"type": "openai", "preset": "ocak", "base_url": f"{s.url}/v1",
                               "health_interval": 0.5}
                     for i, s in enumerate((r1, r2, r3), 1)}  # fmt: skip
        config.write_text(json.dumps({
            "providers": providers,
            "models": {"pool": {"balance": "least-busy", "targets": [
                {"provider": name, "model": "default", "rank": 0} for name in providers]}},
            "routing": {"retries": 0},
        }))  # fmt: skip
        gw = ServerProcess(["--config", str(config)], env={"OCAK_DATA_DIR": str(tmp_path / "gw")},
                           log_path=tmp_path / "gateway.log")  # fmt: skip
        try:
            gw.wait_ready()
            results: list[dict[str, Any]] = []
            started = threading.Event()
            threads = [
                threading.Thread(target=stream, args=(gw.url, f"Count from {i} to {i + 40}.",
                                                      results, started))
                for i in range(N)
            ]  # fmt: skip
            for t in threads:
                t.start()
            assert started.wait(60), "no stream started"
            assert wait_until(lambda: busy(r1), timeout=30)  # r1 holds requests now
            r1.proc.send_signal(signal.SIGKILL)
            for t in threads:
                t.join(120)
            after: list[dict[str, Any]] = []
            for i in range(3):  # after the kill: served by the living replicas
                stream(gw.url, f"Say {i}.", after, threading.Event())
            metrics = httpx.get(f"{gw.url}/metrics").text
        finally:
            gw.stop()
    log = (tmp_path / "gateway.log").read_text()
    assert len(results) == N
    assert all(r["status"] == 200 for r in results), results
    cut = [r for r in results if r["error"] is not None]
    done = [r for r in results if r["finished"]]
    # Nothing failed before its first token: an error only ever follows chunks.
    assert all(r["chunks"] > 0 for r in cut), cut
    assert len(cut) + len(done) == N, results
    # r1 held at least two when it died (its health said so): what it had not begun to
    # answer was retried on another replica, as the gateway's log says.
    assert "r1/default failed for 'pool'" in log
    assert all(r["backend"] in ("r1/default", "r2/default", "r3/default") for r in results)
    failed = sum(
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "ocak_requests_total"
        and sample.labels.get("backend") == "r1/default"
        and sample.labels.get("status") == "failed"
    )
    assert failed == len(cut), metrics
    assert all(r["finished"] and r["backend"] != "r1/default" for r in after), after


def busy(server: ServerProcess) -> bool:
    try:
        models = httpx.get(f"{server.url}/health", timeout=2).json()["models"]
    except (httpx.HTTPError, ValueError, KeyError):
        return False
    return any((m.get("active") or 0) + (m.get("queued") or 0) >= 2 for m in models)
