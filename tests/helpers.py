"""Start real ocak servers for tests: a subprocess on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

# A tool every API's tests call: its arguments have a schema the answer must satisfy.
ADD_PARAMETERS: Any = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"],
}
ADD_TOOL: Any = {
    "type": "function",
    "function": {"name": "add", "description": "Add two integers.", "parameters": ADD_PARAMETERS},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``ocak serve`` in a child process, with its log captured to a file."""

    def __init__(
        self,
        args: Sequence[str] = (),
        *,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path or Path(f"/tmp/ocak-test-{self.port}.log")
        full_env = {**os.environ, **(env or {})}
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ocak", "serve", "--port", str(self.port), *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                r = httpx.get(f"{self.url}/health", timeout=2)
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return int(self.proc.returncode)


@contextlib.contextmanager
def running(
    args: Sequence[str] = (), *, env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    """``ocak serve`` started, ready, and stopped when the block ends."""
    proc = ServerProcess(args, env=env)
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def active(server: ServerProcess) -> int:
    """Sequences running or waiting on ``server``'s engines, from ``/health``."""
    models = httpx.get(f"{server.url}/health", timeout=5).json()["models"]
    return int(sum(m.get("active", 0) + m.get("queued", 0) for m in models))


def wait_until(predicate: object, timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(interval)
    return False


class AppServer:
    """Serve an in-process ASGI app with uvicorn on a free loopback port (a thread)."""

    def __init__(self, app: object) -> None:
        import threading

        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,  # type: ignore[arg-type]
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> AppServer:
        self.thread.start()
        if not wait_until(lambda: self.server.started, timeout=30):
            raise TimeoutError("in-process server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, and its key (openssl)."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


# What GET /v1/models and gRPC's ListModels list after the chat models: the bundled speech
# models, under their own names and OpenAI's.
BUNDLED_SPEECH = [
    "piper",
    "tts-1",
    "tts-1-hd",
    "gpt-4o-mini-tts",
    "whisper-tiny.en",
    "whisper-1",
    "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe",
]
# ... then the bundled embedder, under its own name and OpenAI's.
BUNDLED_EMBEDDING = [
    "all-minilm-l6-v2",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "text-embedding-ada-002",
]
