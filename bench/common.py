"""Shared benchmark tooling: load generation, percentiles, servers, and the report file.

Every benchmark starts what it measures, runs the peers in the same run, and
writes its own section of BENCHMARKS.md (between ``<!-- bench:NAME -->``
markers) with the command, date, machine and versions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "BENCHMARKS.md"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; nan when empty."""
    if not values:
        return float("nan")
    data = sorted(values)
    k = (len(data) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


@dataclass
class StreamResult:
    ok: bool
    tokens: int = 0
    ttft: float = float("nan")
    duration: float = 0.0
    error: str | None = None


@dataclass
class LevelResult:
    """One concurrency level against one server."""

    concurrency: int
    results: list[StreamResult] = field(default_factory=list)
    wall: float = 0.0

    @property
    def ok(self) -> list[StreamResult]:
        return [r for r in self.results if r.ok]

    @property
    def errors(self) -> int:
        return sum(1 for r in self.results if not r.ok)

    @property
    def aggregate_tps(self) -> float:
        return sum(r.tokens for r in self.ok) / self.wall if self.wall else 0.0

    @property
    def per_stream_tps(self) -> float:
        rates = [r.tokens / r.duration for r in self.ok if r.duration > 0]
        return statistics.mean(rates) if rates else 0.0

    def ttft(self, q: float) -> float:
        return percentile([r.ttft for r in self.ok], q)


async def stream_chat(
    http: httpx.AsyncClient, url: str, body: dict[str, Any], *, count_chunks: bool = False
) -> StreamResult:
    """One streaming chat completion; tokens come from the usage chunk when present."""
    start = time.perf_counter()
    ttft = float("nan")
    tokens = 0
    chunks = 0
    try:
        async with http.stream("POST", url, json=body) as r:
            if r.status_code != 200:
                await r.aread()
                return StreamResult(False, error=f"HTTP {r.status_code}: {r.text[:200]}")
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    break
                payload = json.loads(data)
                if "error" in payload:
                    return StreamResult(False, error=str(payload["error"])[:200])
                choices = payload.get("choices") or []
                if choices:
                    delta = choices[0].get("delta") or {}
                    text = delta.get("content") or choices[0].get("text")
                    if text:
                        chunks += 1
                        if ttft != ttft:  # nan: first text
                            ttft = time.perf_counter() - start
                usage = payload.get("usage")
                if usage:
                    tokens = int(usage.get("completion_tokens", 0))
    except httpx.HTTPError as exc:
        return StreamResult(False, error=f"{type(exc).__name__}: {exc}")
    if count_chunks or not tokens:
        tokens = tokens or chunks
    return StreamResult(True, tokens, ttft, time.perf_counter() - start)


async def run_level(
    url: str,
    concurrency: int,
    requests: int,
    make_body: Callable[[int], dict[str, Any]],
    *,
    timeout: float = 600.0,
) -> LevelResult:
    """``requests`` streaming calls, ``concurrency`` at a time (closed loop)."""
    level = LevelResult(concurrency)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as http:

        async def worker() -> None:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                level.results.append(await stream_chat(http, url, make_body(i)))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        level.wall = time.perf_counter() - start
    return level


class Process:
    """A server subprocess for a benchmark, waited on until it answers ``ready_path``."""

    def __init__(self, name: str, cmd: list[str], port: int, ready_path: str = "/health") -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = Path(f"/tmp/ocak-bench-{name}-{port}.log")
        self._log = self.log.open("wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        self.ready_path = ready_path

    def wait(self, timeout: float = 300) -> Process:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} not ready: {self.log.read_text()[-2000:]}")

    def rss_mb(self) -> float:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return float("nan")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()


def versions(*packages: str) -> str:
    out = []
    for p in packages:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out.append(f"{p} {metadata.version(p)}")
    return ", ".join(out)


def machine() -> str:
    """Cores, CPU model and its notable flags (ocak's own reading: ``ocak doctor``'s), memory."""
    from ocak.system.cpu import read_cpu

    cpu = read_cpu()
    flags = " ".join(cpu.notable()) if cpu.flags is not None else "flags unknown"
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu.cores} cores ({cpu.model}; {flags}), {mem:.0f} GiB RAM, {platform.system()}"


def header(command: str, *packages: str) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"Command: `{command}`  \n"
        f"Date: {now}  \n"
        f"Machine: {machine()}  \n"
        f"Python {sys.version.split()[0]}; {versions(*packages)}\n"
    )


def write_section(name: str, title: str, body: str) -> None:
    """Replace (or append) this benchmark's section of BENCHMARKS.md."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n## {title}\n\n{body.strip()}\n{end}"
    text = (
        REPORT.read_text()
        if REPORT.exists()
        else (
            "# Benchmarks\n\nResults of `make bench` and the other benchmark commands named in "
            "each section. Absolute figures on these shared 2-core machines move 2-4x from "
            "run to run; compare the ratios measured within one run.\n"
        )
    )
    if start in text and end in text:
        before = text[: text.index(start)]
        after = text[text.index(end) + len(end) :]
        text = before + block + after
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    REPORT.write_text(text)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def fmt(v: object) -> str:
        if isinstance(v, float):
            if v != v:
                return "-"
            return f"{v:.2f}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
