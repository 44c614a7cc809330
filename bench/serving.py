"""Serving benchmark: ocak against llama.cpp in-process and llama-cpp-python's server.

In one run on one machine: the raw engine (llama-cpp-python's ``Llama``
streaming in-process, single stream: the baseline), ocak over HTTP at each
concurrency level, and llama-cpp-python's own server at the same levels
(interleaved level by level, so machine noise hits all of them alike). Optionally
llama.cpp's C++ ``llama-server`` too, when ``LLAMA_SERVER`` names its binary.
Then time to first token with a ~1,000-token system prompt, reused or not.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench import threads
from bench.common import (
    ROOT,
    LevelResult,
    Process,
    free_port,
    header,
    percentile,
    run_level,
    table,
    write_section,
)
from ocak.models.store import default_model_path

TOPICS = [
    "a lighthouse keeper who finds a message in a bottle",
    "a dragon who is afraid of fire",
    "two rival bakers in a small mountain town",
    "a robot learning to paint in an old museum",
    "a sailor lost in a storm near an unknown island",
    "a child who can talk to birds in the city",
    "a detective solving a mystery on a night train",
    "a farmer whose crops grow overnight into a forest",
]
MAX_TOKENS = 96
LEVELS = [1, 2, 4, 8, 16]
THREADS = int(os.environ.get("OCAK_BENCH_THREADS", str(os.cpu_count() or 2)))
CTX = 2048


def prompt(i: int) -> str:
    """A different prompt for every request (its number first), like different users:
    no server can answer from a cached copy of the whole prompt."""
    return (
        f"Story number {i}. You are a storyteller. Write a long and detailed story about "
        f"{TOPICS[i % len(TOPICS)]}. Describe the place, the people, and everything "
        "that happens to them, from the beginning to the end."
    )


def chat_body(i: int) -> dict[str, Any]:
    return {
        "model": "default",
        "messages": [{"role": "user", "content": prompt(i)}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0.7,
        "seed": i,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


class RawEngine:
    """llama-cpp-python's ``Llama`` in-process, streaming: the single-stream baseline."""

    def __init__(self) -> None:
        from llama_cpp import Llama

        self.llm = Llama(
            str(default_model_path()),
            n_ctx=CTX,
            n_threads=THREADS,
            n_threads_batch=THREADS,
            verbose=False,
        )

    def rate(self, i: int) -> float:
        """Tokens/s of one streamed answer, from the request to its last token."""
        start = time.perf_counter()
        tokens = 0
        for chunk in self.llm.create_chat_completion(
            messages=[{"role": "user", "content": prompt(i)}],
            max_tokens=MAX_TOKENS,
            temperature=0.7,
            seed=i,
            stream=True,
        ):
            # One chunk per token; the first (role only) and the last (finish) carry none.
            delta = chunk["choices"][0]["delta"]
            if isinstance(delta, dict) and delta.get("content"):
                tokens += 1
        return tokens / (time.perf_counter() - start)


def single_stream(raw: RawEngine, url: str, runs: int = 12) -> tuple[list[float], list[float]]:
    """The raw engine and ocak over HTTP, one request each in turn, same prompts."""
    raw_rates, http_rates = [], []
    for i in range(runs):
        raw_rates.append(raw.rate(1000 + i))
        r = asyncio.run(run_level(url, 1, 1, lambda _k, i=i: chat_body(1000 + i)))
        http_rates.append(r.per_stream_tps)
    return raw_rates, http_rates


def start_servers(model: Path) -> dict[str, Process]:
    servers: dict[str, Process] = {}
    port = free_port()
    servers["ocak"] = Process(
        "ocak",
        [
            sys.executable,
            "-m",
            "ocak",
            "serve",
            "--model",
            "default",
            "--port",
            str(port),
            "--parallel",
            "16",
            "--ctx-size",
            str(CTX),
            "--threads",
            str(THREADS),
            "--max-queue",
            "64",
            "--log-level",
            "warning",
        ],
        port,
    )
    port = free_port()
    servers["llama-cpp-python server"] = Process(
        "llama-cpp-python",
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--model_alias",
            "default",
            "--port",
            str(port),
            "--n_ctx",
            str(CTX),
            "--n_threads",
            str(THREADS),
            "--n_threads_batch",
            str(THREADS),
            # Queue concurrent requests instead of cutting the running stream off.
            "--interrupt_requests",
            "False",
        ],
        port,
        ready_path="/v1/models",
    )
    binary = os.environ.get("LLAMA_SERVER")
    if binary:
        port = free_port()
        servers["llama.cpp llama-server"] = Process(
            "llama-server",
            [
                binary,
                "-m",
                str(model),
                "--port",
                str(port),
                "-np",
                "16",
                "-c",
                str(CTX * 16),
                "-t",
                str(THREADS),
                "--alias",
                "default",
                "--cont-batching",
            ],
            port,
        )
    for s in servers.values():
        s.wait()
    return servers


async def prefix_reuse(url: str, n: int = 5) -> tuple[list[float], list[float]]:
    """TTFT with a ~1,000-token system prompt: identical each time, or varied at its start."""
    import httpx

    from bench.common import stream_chat

    rules = " ".join(
        f"Rule {k}: the innkeeper greets travellers, remembers their names, keeps the fire "
        "burning, and never tells anyone about the cellar."
        for k in range(40)
    )

    def body(system: str, i: int) -> dict[str, Any]:
        return {
            "model": "default",
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": f"Question {i}: who are you?"},
            ],
            "max_tokens": 8,
            "stream": True,
        }

    reused, fresh = [], []
    async with httpx.AsyncClient(timeout=300) as http:
        chat = f"{url}/v1/chat/completions"
        await stream_chat(http, chat, body(rules, -1))  # warm the cache
        for i in range(n):
            r = await stream_chat(http, chat, body(rules, i))
            reused.append(r.ttft)
            r = await stream_chat(http, chat, body(f"Session {i} {time.time()}. {rules}", i))
            fresh.append(r.ttft)
    return reused, fresh


def plot(results: dict[str, list[LevelResult]], baseline: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, levels in results.items():
        ax.plot(
            [lv.concurrency for lv in levels],
            [lv.aggregate_tps for lv in levels],
            marker="o",
            label=name,
        )
    ax.axhline(baseline, color="grey", linestyle="--", label="llama.cpp in-process, 1 stream")
    ax.set_xscale("log", base=2)
    ax.set_xticks(LEVELS, [str(c) for c in LEVELS])
    ax.set_xlabel("concurrent streams")
    ax.set_ylabel("aggregate tokens/s")
    ax.set_title("SmolLM2-135M Q4_1, streaming chat, 2 CPU cores")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench serving", description=__doc__)
    parser.add_argument("--levels", type=int, nargs="+", default=LEVELS)
    levels: list[int] = parser.parse_args(argv).levels
    model = default_model_path()
    raw = RawEngine()
    servers = start_servers(model)
    results: dict[str, list[LevelResult]] = {name: [] for name in servers}
    cpu: dict[str, dict[int, threads.CpuSplit]] = {name: {} for name in servers}
    try:
        print(f"single stream, raw engine and ocak in turn ({THREADS} threads)...", flush=True)
        base_runs, ocak_single = single_stream(raw, f"{servers['ocak'].url}/v1/chat/completions")
        for c in levels:
            for name, srv in servers.items():
                requests = max(4, 2 * c)
                before = threads.sample(srv.proc.pid)
                # Prompt numbers never repeat across levels: nothing is served from a
                # cached copy of a prompt another level already sent.
                lv = asyncio.run(
                    run_level(
                        f"{srv.url}/v1/chat/completions",
                        c,
                        requests,
                        lambda k, c=c: chat_body(100 * c + k),
                    )
                )
                results[name].append(lv)
                cpu[name][c] = threads.split(before, threads.sample(srv.proc.pid), THREADS)
                print(
                    f"{name:28s} c={c:2d} agg={lv.aggregate_tps:6.1f} tok/s "
                    f"stream={lv.per_stream_tps:5.1f} ttft50={lv.ttft(50):.2f}s "
                    f"ttft95={lv.ttft(95):.2f}s errors={lv.errors}",
                    flush=True,
                )
        print("prefix reuse...", flush=True)
        reused, fresh = asyncio.run(prefix_reuse(servers["ocak"].url))
    finally:
        for srv in servers.values():
            srv.stop()
    baseline = statistics.median(base_runs)
    report(results, cpu, baseline, base_runs, ocak_single, reused, fresh)


def report(
    results: dict[str, list[LevelResult]],
    cpu: dict[str, dict[int, threads.CpuSplit]],
    baseline: float,
    base_runs: list[float],
    ocak_runs: list[float],
    reused: list[float],
    fresh: list[float],
) -> None:
    rows = []
    for name, levels in results.items():
        for lv in levels:
            rows.append(
                [
                    name,
                    lv.concurrency,
                    lv.aggregate_tps,
                    lv.aggregate_tps / baseline,
                    lv.per_stream_tps,
                    lv.ttft(50),
                    lv.ttft(95),
                    lv.errors,
                ]
            )
    ocak = {lv.concurrency: lv for lv in results["ocak"]}
    peer = {lv.concurrency: lv for lv in results["llama-cpp-python server"]}
    cpp = {lv.concurrency: lv for lv in results.get("llama.cpp llama-server", [])}
    checks = []
    # Each HTTP request ran right after its raw twin (same prompt, same seed): the median
    # of those paired ratios is robust to the machine's load drifting during the runs.
    paired = statistics.median(h / r for h, r in zip(ocak_runs, base_runs, strict=True))
    checks.append(("single stream over HTTP / raw engine", paired, ">= 0.95"))
    for c in (8, 16):
        if c in ocak and c in peer:
            checks.append(
                (
                    f"aggregate at {c} / llama-cpp-python server",
                    ocak[c].aggregate_tps / peer[c].aggregate_tps,
                    ">= 1.4",
                )
            )
        if c in ocak and c in cpp:
            checks.append(
                (
                    f"aggregate at {c} / llama.cpp llama-server",
                    ocak[c].aggregate_tps / cpp[c].aggregate_tps,
                    ">= 1.0",
                )
            )
    if 16 in ocak:
        checks.append(("errors at 16 streams", float(ocak[16].errors), "0"))
    if 1 in ocak and 8 in ocak:
        checks.append(("TTFT p50 at 8 / at 1", ocak[8].ttft(50) / ocak[1].ttft(50), "<= 3"))
    plot_path = ROOT / "bench" / "results" / "serving.png"
    plot_path.parent.mkdir(parents=True, exist_ok=True)
    plot(results, baseline, plot_path)
    body = header("make bench  (python -m bench serving)", "ocak", "llama_cpp_python")
    body += (
        f"\nModel: SmolLM2-135M-Instruct Q4_1 (the embedded default). Streaming chat, a "
        f"different prompt of ~55 tokens for every request (like different users: no server "
        f"can answer from a cached copy of a whole prompt), max_tokens {MAX_TOKENS}, "
        f"temperature 0.7, {THREADS} threads everywhere. Each level sends max(4, 2 x "
        f"concurrency) requests, closed loop; levels interleaved across servers. Single "
        f"stream: the raw engine (llama-cpp-python `Llama` in-process) and ocak over HTTP "
        f"take turns on the same prompts, {len(base_runs)} requests each: raw "
        f"{baseline:.1f} tokens/s (median of {', '.join(f'{r:.0f}' for r in base_runs)}), "
        f"ocak {statistics.median(ocak_runs):.1f} (of "
        f"{', '.join(f'{r:.0f}' for r in ocak_runs)}); the check below is the median of "
        f"the paired ratios.\n\n"
    )
    body += table(
        [
            "server",
            "streams",
            "aggregate tok/s",
            "x baseline",
            "per-stream tok/s",
            "TTFT p50 s",
            "TTFT p95 s",
            "errors",
        ],
        rows,
    )
    body += "\n\nTargets (ratios within this run):\n\n"
    body += table(["check", "measured", "target"], [[n, v, t] for n, v, t in checks])
    body += (
        f"\n\nCPU by thread during each level (`bench/threads.py`, from /proc): the {THREADS} "
        "busiest threads are the compute threads (llama.cpp's decode thread and its OpenMP "
        "workers), the rest is HTTP, the event loop, JSON and SSE; every CPU-second the rest "
        "takes on these cores is taken from the compute threads.\n\n"
    )
    body += table(
        [
            "server",
            "streams",
            "wall s",
            "compute CPU s",
            "rest CPU s",
            "rest us/token",
            "compute preempted",
        ],
        [
            [
                name,
                lv.concurrency,
                lv.wall,
                split.compute,
                split.rest,
                split.rest_us_per(sum(r.tokens for r in lv.ok)),
                split.preempted,
            ]
            for name, levels in results.items()
            for lv in levels
            for split in (cpu[name][lv.concurrency],)
        ],
    )
    body += (
        "\n\nPrefix reuse (ocak, one stream, ~1,000-token system prompt, time to first token): "
        f"identical system prompt (cells reused) p50 {percentile(reused, 50):.3f} s; "
        f"system prompt changed at its start (nothing reusable) p50 {percentile(fresh, 50):.3f} s; "
        f"ratio {percentile(fresh, 50) / percentile(reused, 50):.1f}x.\n\n"
        "![aggregate tokens/s against concurrency](bench/results/serving.png)\n"
    )
    write_section("serving", "Serving: ocak against llama.cpp and llama-cpp-python", body)
    print(body)
