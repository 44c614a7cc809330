"""A real server's life: records survive kill -9, SIGTERM drains streams and exits 0,
and no keys means no listening beyond loopback."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import ServerProcess
from keys_helpers import create_key, usage_rows

STORY = [{"role": "user", "content": "Write a long story about a dragon who learns to bake."}]


def test_a_finished_requests_record_survives_kill_9(tmp_path: Path) -> None:
    key = create_key(tmp_path, "k")
    server = ServerProcess(
        ["--ctx-size", "512", "--parallel", "2"], env={"OCAK_DATA_DIR": str(tmp_path)}
    )
    try:
        server.wait_ready()
        headers = {"Authorization": f"Bearer {key}"}
        ids = []
        for stream in (False, True):
            with httpx.stream(
                "POST",
                f"{server.url}/v1/chat/completions",
                json={"model": "default", "messages": STORY, "max_tokens": 8, "stream": stream},
                headers=headers,
                timeout=60,
            ) as r:
                body = r.read()
                ids.append(r.headers["x-request-id"])
            assert r.status_code == 200 and body
        server.proc.send_signal(signal.SIGKILL)  # the moment the last response has ended
        server.proc.wait()
    finally:
        server.stop()
    assert server.proc.returncode == -signal.SIGKILL
    for request_id in ids:
        (row,) = usage_rows(tmp_path, request_id=request_id)
        assert row["status"] == "completed" and row["key_name"] == "k"
        assert row["completion_tokens"] > 0


def test_sigterm_lets_streams_finish_records_them_and_exits_0(tmp_path: Path) -> None:
    server = ServerProcess(
        ["--ctx-size", "512", "--parallel", "2"], env={"OCAK_DATA_DIR": str(tmp_path)}
    )
    server.wait_ready()
    got: dict[str, Any] = {}
    first_chunk = threading.Event()

    def stream() -> None:
        lines: list[str] = []
        with httpx.stream(
            "POST",
            f"{server.url}/v1/chat/completions",
            json={
                "model": "default",
                "messages": STORY,
                "max_tokens": 48,
                "temperature": 0,
                "stream": True,
            },
            timeout=120,
        ) as r:
            got["id"] = r.headers["x-request-id"]
            for line in r.iter_lines():
                if line:
                    lines.append(line)
                    first_chunk.set()
        got["lines"] = lines

    reader = threading.Thread(target=stream)
    reader.start()
    assert first_chunk.wait(60)
    server.proc.send_signal(signal.SIGTERM)
    reader.join(120)
    code = server.stop(timeout=60)
    assert code == 0, server.log()
    lines = got["lines"]
    assert lines[-1] == "data: [DONE]"
    assert '"finish_reason":"length"' in lines[-2] or '"finish_reason":"stop"' in lines[-2]
    (row,) = usage_rows(tmp_path, request_id=got["id"])
    assert row["status"] == "completed" and row["completion_tokens"] > 1
    # Nothing is listening any more.
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/health/live", timeout=5)


def test_past_the_shutdown_deadline_streams_are_cut_and_recorded_as_cancelled(
    tmp_path: Path,
) -> None:
    server = ServerProcess(
        ["--ctx-size", "512", "--parallel", "2", "--shutdown-timeout", "0"],
        env={"OCAK_DATA_DIR": str(tmp_path)},
    )
    server.wait_ready()
    got: dict[str, Any] = {"lines": []}
    first_chunk = threading.Event()

    def stream() -> None:
        try:
            with httpx.stream(
                "POST",
                f"{server.url}/v1/completions",
                json={
                    "model": "default",
                    "prompt": "Once upon a time",
                    "max_tokens": 400,
                    "temperature": 0,
                    "stream": True,
                },
                timeout=120,
            ) as r:
                got["id"] = r.headers["x-request-id"]
                for line in r.iter_lines():
                    got["lines"].append(line)
                    first_chunk.set()
        except httpx.HTTPError as exc:
            got["error"] = exc

    reader = threading.Thread(target=stream)
    reader.start()
    assert first_chunk.wait(60)
    server.proc.send_signal(signal.SIGTERM)
    reader.join(120)
    assert server.stop(timeout=60) == 0, server.log()
    assert "data: [DONE]" not in got["lines"]
    (row,) = usage_rows(tmp_path, request_id=got["id"])
    assert row["status"] == "cancelled"
    assert row["completion_tokens"] < 400


def test_no_keys_means_no_listening_beyond_loopback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ocak", "serve", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"OCAK_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "COLUMNS": "300"},
    )
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert "refusing to listen on 0.0.0.0 with no API keys" in message
    assert "--allow-no-keys" in message


def test_prefill_chunk_flag_sets_the_unit_of_prefix_reuse(tmp_path: Path) -> None:
    server = ServerProcess(
        ["--ctx-size", "512", "--parallel", "2", "--prefill-chunk", "32"],
        env={"OCAK_DATA_DIR": str(tmp_path)},
    )
    # A raw completion prompt has no end-of-turn tokens: its chunks end only at
    # multiples of --prefill-chunk (and at its end).
    rules = " ".join(f"Rule {k}: the miller never lends his cart." for k in range(15))
    body = {"model": "default", "prompt": rules, "max_tokens": 4, "temperature": 0}
    try:
        server.wait_ready()
        cached = []
        for _ in range(2):
            r = httpx.post(f"{server.url}/v1/completions", json=body, timeout=60)
            assert r.status_code == 200, r.text
            usage = r.json()["usage"]
            cached.append(usage["prompt_tokens_details"]["cached_tokens"])
        prompt_tokens = usage["prompt_tokens"]
    finally:
        server.stop()
    assert cached[0] == 0
    # Reused in whole 32-token chunks, up to the last boundary before the prompt's end
    # (the default, 128, would reuse fewer of these ~180 tokens).
    assert cached[1] == (prompt_tokens - 1) // 32 * 32
    assert cached[1] % 128 != 0


def test_sigterm_checkpoints_the_characters_store_into_its_file(tmp_path: Path) -> None:
    """The character service's database was never closed: its WAL outlived the server."""
    from paths import EXAMPLES

    server = ServerProcess(["--parallel", "1"], env={"OCAK_DATA_DIR": str(tmp_path)})
    try:
        server.wait_ready()
        card = (EXAMPLES / "characters" / "bram.yaml").read_bytes()
        r = httpx.post(f"{server.url}/v1/characters/import", content=card, timeout=30)
        assert r.status_code == 201, r.text
        body = {"player_id": "p1", "characters": ["bram"], "greet": False}
        assert httpx.post(f"{server.url}/v1/sessions", json=body, timeout=30).status_code == 201
        assert (tmp_path / "characters.db-wal").stat().st_size > 0  # the session is in the WAL
    finally:
        assert server.stop() == 0
    wal = tmp_path / "characters.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    conn = sqlite3.connect(f"file:{tmp_path / 'characters.db'}?mode=ro", uri=True)
    try:  # the main file alone holds the session now
        assert conn.execute("SELECT player_id FROM sessions").fetchall() == [("p1",)]
    finally:
        conn.close()
