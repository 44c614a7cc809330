"""Soak: 2,000 requests at 16 concurrent clients against a real ``ocak serve``.

``python -m bench.soak [--requests N] [--concurrency C] [--no-write]``

The mix: streaming and non-streaming chat and completions, clients that leave
early (mid-stream, or before a non-streaming answer), and malformed or refused
requests (bad JSON, wrong types, unknown model, no key, wrong key, a key limited
to another model, a rate-limited key, a body over the limit, too many messages,
max_tokens over the cap). Every request carries its own ``x-request-id``.

It reports:
- errors other than the intended 4xx and 429 (target: none);
- the server's resident memory after warm-up and at the end (target: growth < 10%);
- that the usage records account for every request the server accepted, each with
  its status (completed, or cancelled for clients that left), and nothing failed;
- the cost of committing one usage record (SQLite, WAL), measured in-process.

It writes its section of BENCHMARKS.md (between ``<!-- bench:soak -->`` markers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "BENCHMARKS.md"
MAX_TOKENS = 12
BODY_LIMIT = 64 * 1024
MAX_MESSAGES = 32

PROMPTS = [
    "Say hello.",
    "Name three colours.",
    "What is the capital of France?",
    "Write one sentence about the sea.",
    "Count from one to five.",
    "Give me a short tip for learning to cook.",
    "What is two plus two?",
    "Describe a cat in a few words.",
]

# (kind, weight): what each request does. "ok" kinds are accepted; the others are meant
# to be refused with the status given in EXPECTED.
MIX = [
    ("stream_chat", 26),
    ("chat", 18),
    ("completion", 8),
    ("stream_completion", 6),
    ("leave_mid_stream", 12),
    ("leave_before_answer", 8),
    ("bad_json", 2),
    ("wrong_type", 2),
    ("unknown_model", 2),
    ("no_key", 2),
    ("wrong_key", 2),
    ("other_model_key", 2),
    ("rate_limited", 4),
    ("too_large", 2),
    ("too_many_messages", 2),
    ("max_tokens_over_cap", 2),
]
EXPECTED = {
    "bad_json": {400},
    "wrong_type": {400},
    "unknown_model": {404},
    "no_key": {401},
    "wrong_key": {401},
    "other_model_key": {403},
    "rate_limited": {200, 429},
    "too_large": {413},
    "too_many_messages": {400},
    "max_tokens_over_cap": {400},
}
LEAVES = {"leave_mid_stream", "leave_before_answer"}
# Refusals that happen after the request named its model: they leave a "rejected" row.
ROW_ON_REFUSAL = {"unknown_model", "other_model_key", "rate_limited", "too_many_messages",
                  "max_tokens_over_cap"}  # fmt: skip


@dataclass
class Outcome:
    index: int
    kind: str
    request_id: str
    status: int | None = None  # HTTP status; None when the client left before it
    complete: bool = False  # the whole answer arrived
    left: bool = False  # the client left on purpose
    error: str | None = None  # an unintended failure


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    data: Path
    log: Path
    keys: dict[str, str] = field(default_factory=dict)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ocak_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "ocak", *args]


def start_server(data: Path, threads: int) -> Server:
    env = {**os.environ, "OCAK_DATA_DIR": str(data)}
    keys = {}
    for name, extra in (
        ("main", []),
        ("other", ["--models", "not-served"]),
        ("slow", ["--rpm", "3"]),
    ):
        out = subprocess.run(
            ocak_cmd("keys", "create", "--name", name, *extra),
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        keys[name] = out.stdout.strip()
    port = free_port()
    log = data / "server.log"
    proc = subprocess.Popen(
        ocak_cmd(
            "serve", "--port", str(port), "--parallel", "8", "--ctx-size", "1024",
            "--max-queue", "64", "--max-tokens-limit", str(MAX_TOKENS),
            "--max-messages", str(MAX_MESSAGES), "--max-body-bytes", str(BODY_LIMIT),
            "--threads", str(threads), "--queue-timeout", "600",
        ),
        env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    server = Server(proc, f"http://127.0.0.1:{port}", data, log, keys)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(server.url + "/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError("server not ready")


def plan(n: int, seed: int = 6) -> list[str]:
    rng = random.Random(seed)
    kinds = [k for k, w in MIX for _ in range(w)]
    return [rng.choice(kinds) for _ in range(n)]


def request_for(
    kind: str, server: Server, rng: random.Random
) -> tuple[str, str, Any, dict[str, str]]:
    """(method path, body kind, body, headers) for one request of this kind."""
    key = server.keys["main"]
    headers = {"Authorization": f"Bearer {key}"}
    prompt = rng.choice(PROMPTS)
    chat: dict[str, Any] = {
        "model": "default",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": rng.randint(2, MAX_TOKENS),
        "temperature": 0.7,
    }
    completion = {"model": "default", "prompt": prompt, "max_tokens": rng.randint(2, MAX_TOKENS)}
    chat_path, completion_path = "/v1/chat/completions", "/v1/completions"
    if kind in ("stream_chat", "leave_mid_stream"):
        return (
            chat_path,
            "json",
            {
                **chat,
                "stream": True,
                "max_tokens": MAX_TOKENS,
                "stream_options": {"include_usage": True},
            },
            headers,
        )
    if kind in ("chat", "leave_before_answer"):
        return (
            chat_path,
            "json",
            {**chat, "max_tokens": MAX_TOKENS} if kind != "chat" else chat,
            headers,
        )
    if kind == "completion":
        return completion_path, "json", completion, headers
    if kind == "stream_completion":
        return completion_path, "json", {**completion, "stream": True}, headers
    if kind == "bad_json":
        return chat_path, "raw", b'{"model": "default", "messages": [', headers
    if kind == "wrong_type":
        return chat_path, "json", {**chat, "temperature": "hot"}, headers
    if kind == "unknown_model":
        return chat_path, "json", {**chat, "model": f"nope-{rng.randint(0, 10**6)}"}, headers
    if kind == "no_key":
        return chat_path, "json", chat, {}
    if kind == "wrong_key":
        return chat_path, "json", chat, {"Authorization": "Bearer ocak-" + "x" * 43}
    if kind == "other_model_key":
        return chat_path, "json", chat, {"Authorization": f"Bearer {server.keys['other']}"}
    if kind == "rate_limited":
        return (
            chat_path,
            "json",
            {**chat, "max_tokens": 4},
            {"Authorization": f"Bearer {server.keys['slow']}"},
        )
    if kind == "too_large":
        return chat_path, "json", {**chat, "pad": "x" * (BODY_LIMIT + 10)}, headers
    if kind == "too_many_messages":
        return (
            chat_path,
            "json",
            {**chat, "messages": chat["messages"] * (MAX_MESSAGES + 1)},
            headers,
        )
    if kind == "max_tokens_over_cap":
        return chat_path, "json", {**chat, "max_tokens": MAX_TOKENS + 1}, headers
    raise ValueError(kind)


async def one(http: httpx.AsyncClient, server: Server, out: Outcome, rng: random.Random) -> None:
    path, body_kind, body, headers = request_for(out.kind, server, rng)
    headers = {**headers, "x-request-id": out.request_id}
    content = body if body_kind == "raw" else json.dumps(body).encode()
    headers["content-type"] = "application/json"
    stream = isinstance(body, dict) and bool(body.get("stream"))
    url = server.url + path
    try:
        if out.kind == "leave_before_answer":
            task = asyncio.ensure_future(http.post(url, content=content, headers=headers))
            await asyncio.sleep(rng.uniform(0.02, 0.4))
            if task.done():
                r = task.result()
                out.status, out.complete = r.status_code, True
            else:
                task.cancel()
                out.left = True
            return
        async with http.stream("POST", url, content=content, headers=headers) as r:
            out.status = r.status_code
            if out.kind == "leave_mid_stream" and r.status_code == 200:
                chunks = 0
                async for line in r.aiter_lines():
                    if line.startswith("data: "):
                        chunks += 1
                        if chunks >= rng.randint(1, 4):
                            out.left = True
                            break
                if not out.left:
                    out.complete = True
                return
            raw = await r.aread()
            if r.status_code == 200:
                text = raw.decode()
                if stream and not text.rstrip().endswith("data: [DONE]"):
                    out.error = f"stream ended without [DONE]: {text[-200:]}"
                elif '"error"' in text and stream:
                    out.error = f"error in stream: {text[-300:]}"
                out.complete = True
    except httpx.HTTPError as exc:
        out.error = f"{type(exc).__name__}: {exc}"
    finally:
        expected = EXPECTED.get(out.kind, {200})
        # 429 is always an intended answer (a full queue says 429 too).
        if out.error is None and out.status not in (None, 429, *expected):
            out.error = f"HTTP {out.status}, expected {sorted(expected)}"


async def drive(
    server: Server, outcomes: list[Outcome], concurrency: int, on_progress: Any
) -> None:
    queue: asyncio.Queue[Outcome] = asyncio.Queue()
    for o in outcomes:
        queue.put_nowait(o)
    done = 0
    limits = httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=300, limits=limits) as http:

        async def worker(w: int) -> None:
            nonlocal done
            rng = random.Random(w)
            while not queue.empty():
                o = queue.get_nowait()
                await one(http, server, o, rng)
                done += 1
                on_progress(done)

        await asyncio.gather(*(worker(w) for w in range(concurrency)))


def usage_rows(data: Path) -> dict[str, dict[str, Any]]:
    conn = sqlite3.connect(data / "ocak.db")
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute("SELECT * FROM usage WHERE request_id LIKE 'soak-%'").fetchall()
    finally:
        conn.close()
    return {r["request_id"]: dict(r) for r in rows}


def account(outcomes: list[Outcome], rows: dict[str, dict[str, Any]]) -> list[str]:
    """Problems: accepted requests without their row, rows with the wrong status, failures."""
    problems = []
    seen = set()
    for o in outcomes:
        row = rows.get(o.request_id)
        seen.add(o.request_id)
        accepted = o.kind not in EXPECTED or (o.kind == "rate_limited" and o.status == 200)
        if accepted and (o.status == 200 or o.left):
            if row is None:
                problems.append(f"{o.request_id} ({o.kind}): accepted, no usage row")
                continue
            allowed = {"completed"} if o.complete and not o.left else {"completed", "cancelled"}
            if o.left and o.status is None:
                allowed = {"completed", "cancelled"}
            if row["status"] not in allowed:
                problems.append(f"{o.request_id} ({o.kind}): row says {row['status']}")
        elif o.status is not None and o.status >= 400:
            wants_row = o.kind in ROW_ON_REFUSAL or o.status == 429
            if wants_row and (row is None or row["status"] != "rejected"):
                problems.append(f"{o.request_id} ({o.kind}): refused, row {row and row['status']}")
            if not wants_row and row is not None:
                problems.append(f"{o.request_id} ({o.kind}): refused before a model, has a row")
    problems += [f"{rid}: a row no request made" for rid in rows if rid not in seen]
    problems += [f"{rid}: failed" for rid, r in rows.items() if r["status"] == "failed"]
    return problems


def commit_cost(n: int = 3000) -> tuple[float, float]:
    """p50 and p99 microseconds to commit one usage record, in-process, on this disk."""
    from ocak.store.db import open_database
    from ocak.store.usage import UsageRow, insert_usage

    with tempfile.TemporaryDirectory() as d:
        db = open_database(Path(d) / "ocak.db")
        db.checkpoint_in_background()  # as the server does
        times = []
        for i in range(n):
            row = UsageRow(time.time(), f"req_{i}", 1, "k", "default", "llama.cpp:default",
                           "local", False, 20, 10, 15.0, 80.0, "completed", 200)  # fmt: skip
            t = time.perf_counter()
            insert_usage(db, row)
            times.append((time.perf_counter() - t) * 1e6)
        db.close()
    times.sort()
    return times[len(times) // 2], times[int(len(times) * 0.99)]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, {platform.system()}"


def write_section(body: str) -> None:
    start, end = "<!-- bench:soak -->", "<!-- /bench:soak -->"
    block = f"{start}\n## Soak\n\n{body.strip()}\n{end}"
    text = REPORT.read_text() if REPORT.exists() else "# Benchmarks\n"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    REPORT.write_text(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=100, help="requests before the first RSS")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="llama.cpp threads (1: steady on a machine shared with other jobs)",
    )
    parser.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = parser.parse_args(argv)

    data = Path(tempfile.mkdtemp(prefix="ocak-soak-"))
    server = start_server(data, args.threads)
    rss_loaded = server.rss_mb()
    kinds = plan(args.requests)
    outcomes = [Outcome(i, k, f"soak-{i:05d}") for i, k in enumerate(kinds)]
    rss: dict[str, float] = {}
    started = time.monotonic()

    def progress(done: int) -> None:
        if done == args.warmup:
            rss["warm"] = server.rss_mb()
        if done % 200 == 0:
            print(f"  {done}/{args.requests} requests, rss {server.rss_mb():.0f} MiB", flush=True)

    try:
        asyncio.run(drive(server, outcomes, args.concurrency, progress))
        wall = time.monotonic() - started
        rss.setdefault("warm", rss_loaded)
        time.sleep(3)  # let the server notice the last clients that left
        rss["end"] = server.rss_mb()
        rows = usage_rows(data)
    finally:
        server.proc.send_signal(signal.SIGTERM)
        exit_code = server.proc.wait(timeout=120)
    rows_after = usage_rows(data)

    errors = [o for o in outcomes if o.error]
    problems = account(outcomes, rows)
    if len(rows_after) != len(rows):
        problems.append(f"rows changed at shutdown: {len(rows)} -> {len(rows_after)}")
    growth = (rss["end"] - rss["warm"]) / rss["warm"] * 100
    p50, p99 = commit_cost()
    statuses = Counter(r["status"] for r in rows.values())
    http = Counter(str(o.status) if o.status is not None else "left" for o in outcomes)
    kinds_count = Counter(kinds)

    print(f"wall {wall:.0f}s; unintended errors {len(errors)}; accounting problems {len(problems)}")
    for o in errors[:20]:
        print(f"  error {o.request_id} {o.kind}: {o.error}")
    for p in problems[:20]:
        print(f"  {p}")
    print(f"rss loaded {rss_loaded:.0f} MiB, warm {rss['warm']:.0f} MiB, end {rss['end']:.0f} MiB "
          f"({growth:+.1f}%)")  # fmt: skip
    print(f"usage rows by status {dict(statuses)}; http {dict(http)}; exit code {exit_code}")
    print(f"usage record commit: p50 {p50:.0f} us, p99 {p99:.0f} us")

    versions = ", ".join(
        f"{p} {metadata.version(p)}" for p in ("ocak", "llama_cpp_python", "uvicorn", "fastapi")
    )

    def met(ok: bool) -> str:
        return "yes" if ok else "**no**"

    checks = [
        ("errors other than the intended 4xx and 429", len(errors), "0", met(not errors)),
        (
            f"server RSS after {args.warmup} requests -> end",
            f"{rss['warm']:.0f} -> {rss['end']:.0f} MiB ({growth:+.1f}%)",
            "growth < 10%",
            met(growth < 10),
        ),
        ("usage rows not matching what clients saw", len(problems), "0", met(not problems)),
        ("exit code after SIGTERM", exit_code, "0", met(exit_code == 0)),
    ]
    table = "| check | measured | target | met |\n|---|---|---|---|\n" + "\n".join(
        "| " + " | ".join(str(c) for c in row) + " |" for row in checks
    )
    mix = ", ".join(f"{k} {kinds_count[k]}" for k, _ in MIX)
    body = "\n".join(
        [
            f"Command: `python -m bench.soak --requests {args.requests} "
            f"--concurrency {args.concurrency} --threads {args.threads}`  ",
            f"Date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}  ",
            f"Machine: {machine()}  ",
            f"Python {sys.version.split()[0]}; {versions}",
            "",
            "One `ocak serve` on the default model (`--parallel 8 --ctx-size 1024 "
            f"--max-tokens-limit {MAX_TOKENS} --threads {args.threads} --queue-timeout 600`, "
            f"keys and usage records on), {args.requests} "
            f"requests from {args.concurrency} concurrent clients in {wall:.0f} s. Mix: {mix}.",
            "",
            table,
            "",
            "Usage rows by status: "
            + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))
            + ". Every accepted request has its row: completed, or cancelled where the client "
            "left before the end; refusals after the request named its model are `rejected`; "
            "none `failed`. HTTP statuses the clients saw: "
            + ", ".join(f"{k} {v}" for k, v in sorted(http.items()))
            + f' ("left": hung up before the status). RSS right after loading: '
            f"{rss_loaded:.0f} MiB.",
            "",
            "Committing one usage record (SQLite, WAL, `synchronous=NORMAL`, checkpoints in a "
            f"background thread; in-process, same disk): p50 {p50:.0f} µs, p99 {p99:.0f} µs.",
        ]
    )
    if not args.no_write:
        write_section(body)
        print(f"wrote the Soak section of {REPORT}")
    if errors or problems or growth >= 10 or exit_code != 0:
        sys.exit(1)


if __name__ == "__main__":
    main()
