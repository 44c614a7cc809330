"""Health probes: loading, ready, failed; and `ocak serve` exiting when no model loads."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from helpers import AppServer, ServerProcess
from ocak.config import Settings
from ocak.engines.fake import FakeEngine
from ocak.engines.registry import EngineRegistry
from ocak.server.app import create_app


def test_health_goes_from_loading_to_ok() -> None:
    engine = FakeEngine("fake", load_delay=1.5)
    app = create_app(Settings(), EngineRegistry([engine]))
    with AppServer(app) as srv:
        r = httpx.get(f"{srv.url}/health")
        assert r.status_code == 503
        assert r.json()["status"] == "loading"
        assert httpx.get(f"{srv.url}/health/live").status_code == 200
        # A request for a model that is still loading waits for the load, then answers.
        started = time.monotonic()
        chat = httpx.post(
            f"{srv.url}/v1/chat/completions",
            json={"model": "fake", "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
        assert chat.status_code == 200, chat.text
        assert chat.json()["choices"][0]["message"]["content"] == "You said: hi"
        assert time.monotonic() - started > 0.5  # it did wait
        deadline = time.monotonic() + 10
        while httpx.get(f"{srv.url}/health").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        body = httpx.get(f"{srv.url}/health").json()
        assert body["status"] == "ok"
        assert [m["id"] for m in body["models"]] == ["fake"]


def test_health_reports_a_failed_model_with_its_reason() -> None:
    engine = FakeEngine("broken", fail_load="weights are corrupt")
    app = create_app(Settings(), EngineRegistry([engine]))
    with AppServer(app) as srv:
        deadline = time.monotonic() + 10
        while (body := httpx.get(f"{srv.url}/health").json())["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r = httpx.get(f"{srv.url}/health")
        assert r.status_code == 503
        assert body["status"] == "error"
        assert "weights are corrupt" in body["detail"]


def test_real_server_health_is_loading_then_ok_never_error() -> None:
    proc = ServerProcess()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"{proc.url}/health", timeout=2)
            except httpx.HTTPError:
                time.sleep(0.02)
                continue
            seen.append(r.json()["status"])
            if r.status_code == 200:
                break
        assert seen and seen[-1] == "ok"
        assert set(seen) <= {"loading", "ok"}
        # Once ok, it stays ok.
        assert seen.index("ok") == len(seen) - 1
    finally:
        assert proc.stop() == 0


def test_serve_exits_nonzero_naming_the_file_when_the_model_is_not_gguf(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"this is not a model" * 100)
    proc = ServerProcess(["--model", str(bad)])
    code = proc.proc.wait(timeout=60)
    log = proc.log()
    proc.stop()
    assert code != 0
    assert str(bad) in log
    assert "not a GGUF file" in log
    assert "Traceback" not in log


def test_serve_exits_nonzero_for_a_truncated_gguf(tmp_path: Path) -> None:
    from ocak.models.store import default_model_path

    bad = tmp_path / "truncated.gguf"
    bad.write_bytes(default_model_path().read_bytes()[:4096])
    proc = ServerProcess(["--model", str(bad)])
    code = proc.proc.wait(timeout=60)
    log = proc.log()
    proc.stop()
    assert code != 0
    assert str(bad) in log
    assert "Traceback" not in log


def test_a_broken_model_beside_a_good_one_does_not_stop_the_server(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    proc = ServerProcess(["--model", "default", "--model", f"broken={bad}"])
    try:
        proc.wait_ready()
        body = httpx.get(f"{proc.url}/health").json()
        states = {m["id"]: m["state"] for m in body["models"]}
        assert states == {"default": "ready", "broken": "error"}
        r = httpx.post(
            f"{proc.url}/v1/chat/completions",
            json={"model": "broken", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert r.status_code == 503
        assert str(bad) in r.json()["error"]["message"]
    finally:
        proc.stop()


def test_serve_with_an_unknown_model_name_says_so() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "ocak", "serve", "--model", "no-such-model-anywhere"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0
    assert "no-such-model-anywhere" in r.stderr
    assert "Traceback" not in r.stderr
