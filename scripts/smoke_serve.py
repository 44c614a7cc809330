"""CI's smoke test: the server ``make serve`` starts answers a chat request.

Runs ``make serve`` exactly as the README says (on a free port), waits for
``/health``, sends one chat completion over HTTP and checks that an answer comes
back; prints the server's log when anything fails. Standard library only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT = 300.0  # the first `make serve` on a machine may still be installing


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status)
    except (urllib.error.URLError, OSError):
        return 0


def chat(url: str) -> dict[str, object]:
    body = {
        "model": "default",
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 16,
        "temperature": 0,
    }
    request = urllib.request.Request(
        f"{url}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as r:
        data: dict[str, object] = json.loads(r.read())
    return data


def main() -> int:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data_dir, tempfile.TemporaryFile("w+") as log:
        env = {**os.environ, "OCAK_DATA_DIR": data_dir}
        proc = subprocess.Popen(
            ["make", "--no-print-directory", "serve", f"ARGS=--port {port}"],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # make and the server it starts are stopped together
        )
        started = time.monotonic()
        ok = False
        try:
            while time.monotonic() - started < READY_TIMEOUT and proc.poll() is None:
                if get(f"{url}/health") == 200:
                    break
                time.sleep(0.5)
            else:
                raise RuntimeError(f"`make serve` was not ready (exit code {proc.poll()})")
            ready = time.monotonic() - started
            t0 = time.monotonic()
            answer = chat(url)
            choices = answer.get("choices")
            assert isinstance(choices, list) and choices, answer
            text = choices[0]["message"]["content"]
            assert isinstance(text, str) and text.strip(), answer
            if proc.poll() is not None:
                raise RuntimeError(f"the server died after answering (exit {proc.returncode})")
            print(
                f"smoke: `make serve` ready in {ready:.1f} s; chat answered in "
                f"{time.monotonic() - t0:.2f} s: {text.strip()[:60]!r}"
            )
            ok = True
        except (RuntimeError, AssertionError, urllib.error.URLError, OSError) as exc:
            print(f"smoke: FAILED: {exc!r}", file=sys.stderr)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            if not ok:
                log.seek(0)
                print(log.read()[-6000:], file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
