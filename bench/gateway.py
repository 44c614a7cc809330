"""Gateway overhead: ocak and LiteLLM's proxy in front of one fast stub upstream, and the stub
called directly, in one run on one machine.

    python -m bench gateway            # writes its section of BENCHMARKS.md
    python -m bench.gateway --quick    # shorter phases, for a look
    python -m bench.gateway --tracing  # tracing off and on, side by side (gateway_tracing.py)

What runs (each in its own process): a stub OpenAI-compatible upstream answering in about
4 ms (uvicorn, raw ASGI); ``ocak serve`` with an alias on that stub, an API key required
and usage records written (SQLite, committed per request); LiteLLM's proxy with a master
key on the same stub. The load generator is this process: open loop (requests leave at a
fixed rate whatever the answers do), over a minimal HTTP/1.1 client so that it is not the
bottleneck. Reported, non-streaming and streaming:

- added latency p50/p99 at 20 requests/s: each proxy's latency percentile minus the stub's
  own at the same rate (phases interleaved, two rounds);
- the highest sustained rate: rates stepped up, 5 s each; a rate is sustained when every
  request succeeds and p99 stays under 250 ms (a stub answering in 4 ms; above that the
  proxy is queueing, i.e. falling behind).

LiteLLM runs from its own virtual environment (``bench/out/litellm-venv``, made on first
use with ``pip install 'litellm[proxy]>=1.106,<1.107'``): its pins would downgrade
packages ocak's environment relies on (openai among them). Its usage records need
PostgreSQL, which is not here, so it runs with the master key only; ocak writes its
records. Both favour LiteLLM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    ROOT,
    Process,
    free_port,
    header,
    percentile,
    table,
    versions,
    write_section,
)

STUB_DELAY = 0.004
TOKENS = ["Hello", ",", " this", " is", " the", " stub", " upstream", "."]
LATENCY_RATE = 20.0
SUSTAIN_RATES = (20, 40, 60, 80, 100, 125, 150, 200, 250, 300, 400, 500, 600, 800)
SUSTAIN_P99 = 0.250
LITELLM_SPEC = "litellm[proxy]>=1.106,<1.107"
LITELLM_VENV = ROOT / "bench" / "out" / "litellm-venv"
OCAK_KEY_NAME = "bench"
LITELLM_KEY = "sk-bench-master-key"


# -- the stub upstream ---------------------------------------------------------------------


def _stub_payloads() -> tuple[bytes, list[bytes], bytes]:
    base = {"id": "chatcmpl-stub", "created": 1700000000, "model": "stub-model"}
    whole = {
        **base,
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(TOKENS)},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": len(TOKENS), "total_tokens": 20},
    }
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
    deltas += [{"content": t} for t in TOKENS]
    chunks = [
        {
            **base,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": d, "finish_reason": None}],
        }
        for d in deltas
    ]
    chunks.append(
        {
            **base,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        }
    )
    frames = [b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks]
    usage = {
        **base,
        "object": "chat.completion.chunk",
        "choices": [],
        "usage": whole["usage"],
    }
    return json.dumps(whole).encode(), frames, b"data: " + json.dumps(usage).encode() + b"\n\n"


def serve_stub(port: int) -> None:
    """A fast OpenAI-compatible upstream: every answer after ``STUB_DELAY`` seconds."""
    import uvicorn

    whole, frames, usage_frame = _stub_payloads()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["path"] in ("/health", "/v1/models"):
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = json.loads(body or b"{}")
        await asyncio.sleep(STUB_DELAY)
        if not request.get("stream"):
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": whole})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        for frame in frames:
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        if (request.get("stream_options") or {}).get("include_usage"):
            await send({"type": "http.response.body", "body": usage_frame, "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        http="httptools",
        loop="uvloop",
        timeout_keep_alive=30,
    )


# -- load generation -----------------------------------------------------------------------


class Http:
    """A minimal keep-alive HTTP/1.1 client (a pool of connections to one server)."""

    def __init__(self, url: str) -> None:
        hostport = url.split("://", 1)[1]
        self.host, port = hostport.split(":")
        self.port = int(port)
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def post(self, path: str, body: bytes, headers: str) -> tuple[int, bytes]:
        conn = self.idle.pop() if self.idle else await asyncio.open_connection(self.host, self.port)
        reader, writer = conn
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{headers}\r\n"
        )
        close = False
        try:
            writer.write(head.encode() + body)
            status_line = await reader.readline()
            if not status_line:
                raise ConnectionError("the server closed the connection")
            status = int(status_line.split()[1])
            length: int | None = None
            chunked = False
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.partition(b":")
                key = name.strip().lower()
                if key == b"content-length":
                    length = int(value)
                elif key == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
                elif key == b"connection" and b"close" in value.lower():
                    close = True
            if chunked:
                parts = []
                while True:
                    size = int((await reader.readline()).split(b";")[0], 16)
                    if size == 0:
                        await reader.readline()
                        break
                    parts.append(await reader.readexactly(size))
                    await reader.readexactly(2)
                data = b"".join(parts)
            elif length is not None:
                data = await reader.readexactly(length)
            else:
                data, close = await reader.read(), True
        except BaseException:
            writer.close()
            raise
        if close:
            writer.close()
        else:
            self.idle.append(conn)
        return status, data

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


@dataclass
class Target:
    name: str
    url: str
    model: str
    key: str | None = None
    process: Process | None = None

    @property
    def headers(self) -> str:
        return f"Authorization: Bearer {self.key}\r\n" if self.key else ""

    def body(self, stream: bool) -> bytes:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": "Say hi."}],
            "max_tokens": 16,
        }
        if stream:
            payload["stream"] = True
        return json.dumps(payload).encode()


@dataclass
class Phase:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None

    def p(self, q: float) -> float:
        return percentile(self.latencies, q)


def _ok(status: int, data: bytes, stream: bool) -> str | None:
    if status != 200:
        return f"HTTP {status}: {data[:200]!r}"
    if stream:
        if not data.rstrip().endswith(b"data: [DONE]") or b'"error"' in data:
            return f"bad stream: {data[-200:]!r}"
    elif b'"choices"' not in data:
        return f"bad body: {data[:200]!r}"
    return None


async def open_loop(target: Target, rate: float, seconds: float, stream: bool) -> Phase:
    """Requests at a fixed rate for ``seconds``; latency counts from each one's due time."""
    http = Http(target.url)
    body, headers = target.body(stream), target.headers
    phase = Phase()
    loop = asyncio.get_running_loop()

    async def one(due: float) -> None:
        try:
            status, data = await asyncio.wait_for(
                http.post("/v1/chat/completions", body, headers), 30
            )
            problem = _ok(status, data, stream)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        if problem is None:
            phase.latencies.append(loop.time() - due)
        else:
            phase.errors += 1
            phase.first_error = phase.first_error or problem

    tasks = []
    start = loop.time() + 0.05
    for i in range(int(rate * seconds)):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(due)))
    await asyncio.gather(*tasks)
    http.close()
    return phase


def sustained(phase: Phase) -> bool:
    return phase.errors == 0 and phase.p(99) <= SUSTAIN_P99


async def find_sustained(target: Target, stream: bool, seconds: float) -> tuple[int, str]:
    best, note = 0, ""
    for rate in SUSTAIN_RATES:
        phase = await open_loop(target, rate, seconds, stream)
        ok = sustained(phase)
        print(
            f"  {target.name:8s} {'stream' if stream else 'whole':6s} {rate:4d}/s: "
            f"p50 {phase.p(50) * 1000:7.1f} ms p99 {phase.p(99) * 1000:8.1f} ms "
            f"errors {phase.errors}{'' if ok else '  <- not sustained'}",
            flush=True,
        )
        if not ok:
            note = phase.first_error or f"p99 {phase.p(99) * 1000:.0f} ms at {rate}/s"
            break
        best = rate
        await asyncio.sleep(1.0)  # let the last phase drain
    else:
        note = f"the highest rate tried ({SUSTAIN_RATES[-1]}/s)"
    return best, note


# -- the servers -------------------------------------------------------------------------


def start_stub() -> Target:
    port = free_port()
    proc = Process(
        "stub", [sys.executable, "-m", "bench.gateway", "stub", "--port", str(port)], port
    )
    return Target("direct", proc.url, "stub-model", process=proc.wait(60))


def start_ocak(stub: Target, work: Path, name: str = "ocak", extra: str = "") -> Target:
    """``ocak serve`` with the benchmark's alias on the stub, in its own data folder;
    ``extra``: more lines of its YAML configuration (the tracing benchmark's endpoint)."""
    data = work / f"{name}-data"
    data.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OCAK_DATA_DIR": str(data)}
    key = subprocess.run(
        [sys.executable, "-m", "ocak", "keys", "create", "--name", OCAK_KEY_NAME],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout.strip()
    config = work / f"{name}.yaml"
    config.write_text(
        "model: [default]\nparallel: 1\nctx_size: 256\n"
        "providers:\n"
        f"  stub: {{type: openai, preset: vllm, base_url: '{stub.url}/v1'}}\n"
        "models:\n"
        "  bench: {targets: [{provider: stub, model: stub-model}]}\n" + extra
    )
    port = free_port()
    os.environ["OCAK_DATA_DIR"] = str(data)  # Process passes the environment on
    proc = Process(
        name,
        [sys.executable, "-m", "ocak", "serve", "--config", str(config), "--port", str(port)],
        port,
    )
    return Target(name, proc.url, "bench", key=key, process=proc.wait(300))


def litellm_binary() -> Path | None:
    """LiteLLM's proxy in its own environment, installed on first use; None if impossible."""
    exe = LITELLM_VENV / "bin" / "litellm"
    if exe.exists():
        return exe
    print(f"installing {LITELLM_SPEC} into {LITELLM_VENV} (once)", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run(
            [str(LITELLM_VENV / "bin" / "pip"), "install", "-q", LITELLM_SPEC],
            check=True,
            timeout=1800,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"LiteLLM could not be installed: {exc}", flush=True)
        shutil.rmtree(LITELLM_VENV, ignore_errors=True)
        return None
    return exe if exe.exists() else None


def start_litellm(stub: Target, work: Path) -> Target | None:
    exe = litellm_binary()
    if exe is None:
        return None
    config = work / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: bench\n"
        "    litellm_params:\n"
        "      model: openai/stub-model\n"
        f"      api_base: {stub.url}/v1\n"
        "      api_key: stub-key\n"
        "litellm_settings: {drop_params: true}\n"
        f"general_settings: {{master_key: {LITELLM_KEY}}}\n"
    )
    port = free_port()
    proc = Process(
        "litellm",
        [str(exe), "--config", str(config), "--port", str(port), "--num_workers", "1"],
        port,
        ready_path="/health/liveliness",
    )
    try:
        return Target("litellm", proc.url, "bench", key=LITELLM_KEY, process=proc.wait(300))
    except (RuntimeError, TimeoutError) as exc:
        print(f"LiteLLM did not start: {str(exc)[-500:]}", flush=True)
        proc.stop()
        return None


def litellm_version() -> str:
    pip = LITELLM_VENV / "bin" / "pip"
    if not pip.exists():
        return "not installed"
    out = subprocess.run([str(pip), "show", "litellm"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


# -- the run -----------------------------------------------------------------------------


async def measure(
    targets: Sequence[Target], rounds: int, latency_seconds: float, sustain_seconds: float
) -> dict[str, Any]:
    direct = targets[0]
    for t in targets:  # warm connections, caches and the proxies' first-request paths
        for stream in (False, True):
            await open_loop(t, 20, 1.0, stream)
    latency: dict[tuple[str, bool], Phase] = {}
    for r in range(rounds):
        for stream in (False, True):
            for t in targets:
                phase = await open_loop(t, LATENCY_RATE, latency_seconds, stream)
                total = latency.setdefault((t.name, stream), Phase())
                total.latencies += phase.latencies
                total.errors += phase.errors
                total.first_error = total.first_error or phase.first_error
                print(
                    f"round {r + 1} {t.name:8s} {'stream' if stream else 'whole':6s} "
                    f"p50 {phase.p(50) * 1000:6.2f} ms p99 {phase.p(99) * 1000:6.2f} ms "
                    f"errors {phase.errors}",
                    flush=True,
                )
    rates: dict[tuple[str, bool], tuple[int, str]] = {}
    for stream in (False, True):
        for t in targets:
            rates[(t.name, stream)] = await find_sustained(t, stream, sustain_seconds)
    return {"latency": latency, "rates": rates, "direct": direct.name}


def report(targets: Sequence[Target], results: dict[str, Any], command: str, quick: bool) -> str:
    latency: dict[tuple[str, bool], Phase] = results["latency"]
    rates: dict[tuple[str, bool], tuple[int, str]] = results["rates"]
    rows = []
    for stream in (False, True):
        base = latency[("direct", stream)]
        for t in targets:
            phase = latency[(t.name, stream)]
            added50 = phase.p(50) - base.p(50) if t.name != "direct" else float("nan")
            added99 = phase.p(99) - base.p(99) if t.name != "direct" else float("nan")
            rate, why = rates[(t.name, stream)]
            rows.append(
                (
                    t.name,
                    "yes" if stream else "no",
                    phase.p(50) * 1000,
                    phase.p(99) * 1000,
                    added50 * 1000,
                    added99 * 1000,
                    phase.errors,
                    rate,
                    why if rate < SUSTAIN_RATES[-1] else f">= {rate} (highest tried)",
                )
            )
    checks = []
    names = {t.name for t in targets}
    for stream in (False, True):
        kind = "streaming" if stream else "non-streaming"
        base = latency[("direct", stream)]
        ocak = latency[("ocak", stream)]
        checks.append(
            (f"added p50 at 20/s, {kind}", f"{(ocak.p(50) - base.p(50)) * 1000:.2f} ms", "<= 2 ms")
        )
        checks.append(
            (f"added p99 at 20/s, {kind}", f"{(ocak.p(99) - base.p(99)) * 1000:.2f} ms", "<= 5 ms")
        )
        if "litellm" in names:
            mine, theirs = rates[("ocak", stream)][0], rates[("litellm", stream)][0]
            ratio = mine / theirs if theirs else float("inf")
            checks.append(
                (f"sustained rate vs LiteLLM, {kind}", f"{mine}/{theirs} = {ratio:.1f}x", ">= 3x")
            )
    litellm_note = (
        f"LiteLLM {litellm_version()} (its own venv, `{LITELLM_SPEC}`), master key, no database "
        "(its usage records need PostgreSQL)."
        if "litellm" in names
        else "LiteLLM could not be installed or started here: ocak against the stub alone."
    )
    body = header(command, "ocak", "uvicorn", "aiohttp", "fastapi") + (
        "\nA stub OpenAI-compatible upstream answering in about 4 ms (uvicorn, raw ASGI, "
        "its own process); ocak with an alias on it, an API key required and a usage record "
        f"committed per request; {litellm_note} Load: open loop from one Python process "
        "(a minimal keep-alive HTTP/1.1 client), chat completions with 8 tokens, streamed "
        f"or not. Latency: {LATENCY_RATE:.0f} requests/s, "
        f"{'1 round' if quick else '2 rounds'} of phases interleaved across servers; "
        "added = the proxy's percentile minus the stub's own. Sustained: rates stepped up "
        f"{SUSTAIN_RATES[0]}-{SUSTAIN_RATES[-1]}/s, a few seconds each; the highest with every "
        f"request answered and p99 under {SUSTAIN_P99 * 1000:.0f} ms. Shared 2-core machine: "
        "absolute figures move from run to run; the comparison is within this run.\n\n"
        + table(
            [
                "server",
                "stream",
                "p50 ms",
                "p99 ms",
                "added p50 ms",
                "added p99 ms",
                "errors",
                "sustained req/s",
                "limit seen",
            ],
            rows,
        )
        + "\n\nTargets:\n\n"
        + table(["check", "measured", "target"], checks)
        + "\n"
    )
    return body


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__)
    parser.add_argument("what", nargs="?", default="run", choices=["run", "stub"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="shorter phases (a quick look)")
    parser.add_argument("--no-litellm", action="store_true", help="ocak and the stub only")
    parser.add_argument(
        "--tracing", action="store_true", help="ocak with tracing off and on (gateway_tracing.py)"
    )
    args = parser.parse_args(argv or [])  # `python -m bench gateway` runs it with defaults
    if args.what == "stub":
        serve_stub(args.port)
        return
    if args.tracing:
        from bench.gateway_tracing import run

        run(args.quick)
        return
    work = ROOT / "bench" / "out" / "gateway"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started: list[Target] = []
    try:
        stub = start_stub()
        started.append(stub)
        started.append(start_ocak(stub, work))
        if not args.no_litellm:
            peer = start_litellm(stub, work)
            if peer is not None:
                started.append(peer)
        rounds, latency_s, sustain_s = (1, 5.0, 3.0) if args.quick else (2, 10.0, 5.0)
        results = asyncio.run(measure(started, rounds, latency_s, sustain_s))
    finally:
        for t in started:
            if t.process is not None:
                t.process.stop()
    command = "python -m bench gateway" + (" --quick" if args.quick else "")
    body = report(started, results, command, args.quick)
    print(body)
    write_section("gateway", "Gateway overhead: ocak and LiteLLM in front of one stub", body)
    print(f"versions: {versions('ocak', 'aiohttp', 'uvicorn')}")


if __name__ == "__main__":
    main(sys.argv[1:])
