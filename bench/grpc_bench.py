"""gRPC against HTTP on one ocak server: time to first token and tokens/s, in the same run.

For the main benchmark: ``run_grpc_level(target, concurrency, requests, make_request)``
is the gRPC twin of ``bench.common.run_level`` (same ``LevelResult``, so its rows sit
beside HTTP's), and ``compare(http_url, grpc_target)`` runs both, interleaved, against
a running server. ``chat_request`` turns the serving benchmark's chat body into the
proto, so both edges get the same work.

Standalone, it starts its own server (or uses one given with ``--http``/``--grpc``)::

    python -m bench.grpc_bench                      # levels 1 and 8, writes BENCHMARKS.md
    python -m bench.grpc_bench --http http://127.0.0.1:8000 --grpc 127.0.0.1:50051
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from bench.common import (
    LevelResult,
    Process,
    StreamResult,
    free_port,
    header,
    run_level,
    table,
    write_section,
)
from bench.serving import CTX, MAX_TOKENS, THREADS, chat_body
from ocak.grpc.v1 import ocak_pb2 as pb
from ocak.grpc.v1 import ocak_pb2_grpc as rpc

LEVELS = (1, 8)
ROUNDS = 2


def chat_request(body: dict[str, Any]) -> pb.ChatRequest:
    """An OpenAI chat body (as ``bench.serving.chat_body`` makes) as a gRPC ``ChatRequest``."""
    return pb.ChatRequest(
        model=body["model"],
        messages=[pb.ChatMessage(role=m["role"], content=m["content"]) for m in body["messages"]],
        max_tokens=body.get("max_tokens"),
        temperature=body.get("temperature"),
        seed=body.get("seed"),
    )


async def stream_grpc_chat(stub: rpc.OcakAsyncStub, request: pb.ChatRequest) -> StreamResult:
    """One streaming Chat call; tokens come from the final message's usage."""
    start = time.perf_counter()
    ttft = float("nan")
    tokens = 0
    try:
        async for message in stub.Chat(request):
            if message.content and ttft != ttft:  # nan: first text
                ttft = time.perf_counter() - start
            if message.finish_reason:
                tokens = message.usage.completion_tokens
    except grpc.aio.AioRpcError as exc:
        return StreamResult(False, error=f"{exc.code().name}: {exc.details()}")
    return StreamResult(True, tokens, ttft, time.perf_counter() - start)


async def run_grpc_level(
    target: str,
    concurrency: int,
    requests: int,
    make_request: Callable[[int], pb.ChatRequest],
) -> LevelResult:
    """``requests`` streaming Chat calls, ``concurrency`` at a time (closed loop), on one
    HTTP/2 connection as a gRPC client uses it."""
    level = LevelResult(concurrency)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    async with grpc.aio.insecure_channel(target) as channel:
        await channel.channel_ready()
        stub = rpc.OcakStub(channel)

        async def worker() -> None:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                level.results.append(await stream_grpc_chat(stub, make_request(i)))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        level.wall = time.perf_counter() - start
    return level


def merge(levels: Sequence[LevelResult]) -> LevelResult:
    """Several runs of one level as one: all streams, the walls added."""
    out = LevelResult(levels[0].concurrency)
    for lv in levels:
        out.results += lv.results
        out.wall += lv.wall
    return out


def compare(
    http_url: str,
    grpc_target: str,
    levels: Sequence[int] = LEVELS,
    *,
    rounds: int = ROUNDS,
    make_body: Callable[[int], dict[str, Any]] = chat_body,
) -> dict[str, list[LevelResult]]:
    """HTTP (SSE) and gRPC on the same server and work, level by level, alternating which
    goes first each round so the machine's drift hits both alike."""
    runs: dict[str, dict[int, list[LevelResult]]] = {"HTTP": {}, "gRPC": {}}

    def make_request(i: int) -> pb.ChatRequest:
        return chat_request(make_body(i))

    for c in levels:
        requests = max(4, 2 * c)
        for r in range(rounds):
            order = ["HTTP", "gRPC"] if r % 2 == 0 else ["gRPC", "HTTP"]
            for edge in order:
                if edge == "HTTP":
                    url = f"{http_url}/v1/chat/completions"
                    lv = asyncio.run(run_level(url, c, requests, make_body))
                else:
                    lv = asyncio.run(
                        run_grpc_level(
                            grpc_target, c, requests, lambda i: chat_request(make_body(i))
                        )
                    )
                runs[edge].setdefault(c, []).append(lv)
                print(
                    f"{edge:5s} c={c:2d} round {r + 1}: agg={lv.aggregate_tps:6.1f} tok/s "
                    f"stream={lv.per_stream_tps:5.1f} ttft50={lv.ttft(50):.3f}s "
                    f"errors={lv.errors}",
                    flush=True,
                )
    return {edge: [merge(by_level[c]) for c in levels] for edge, by_level in runs.items()}


def rows(results: dict[str, list[LevelResult]]) -> list[list[object]]:
    out: list[list[object]] = []
    for edge, levels in results.items():
        for lv in levels:
            out.append(
                [
                    edge,
                    lv.concurrency,
                    len(lv.ok),
                    lv.aggregate_tps,
                    lv.per_stream_tps,
                    lv.ttft(50),
                    lv.ttft(95),
                    lv.errors,
                ]
            )
    return out


def ratios(results: dict[str, list[LevelResult]]) -> list[list[object]]:
    http = {lv.concurrency: lv for lv in results["HTTP"]}
    out: list[list[object]] = []
    for lv in results["gRPC"]:
        h = http.get(lv.concurrency)
        if h is None:
            continue
        out.append(
            [
                lv.concurrency,
                lv.aggregate_tps / h.aggregate_tps if h.aggregate_tps else float("nan"),
                lv.ttft(50) / h.ttft(50),
            ]
        )
    return out


def report(results: dict[str, list[LevelResult]], command: str, rounds: int) -> str:
    body = header(command, "ocak", "grpcio", "llama_cpp_python")
    body += (
        f"\nOne ocak server (SmolLM2-135M-Instruct Q4_1, --parallel 16, --threads {THREADS}), "
        "the serving benchmark's "
        f"streaming chat (max_tokens {MAX_TOKENS}, temperature 0.7, seeded) over HTTP+SSE "
        "(httpx, a connection per stream) and over gRPC (grpc.aio, one HTTP/2 connection). "
        f"Each level: max(4, 2 x concurrency) requests, closed loop, {rounds} rounds per edge, "
        "alternating which edge goes first. TTFT: call start to the first text.\n\n"
    )
    body += table(
        [
            "edge",
            "streams",
            "requests",
            "aggregate tok/s",
            "per-stream tok/s",
            "TTFT p50 s",
            "TTFT p95 s",
            "errors",
        ],
        rows(results),
    )
    body += "\n\ngRPC / HTTP within this run:\n\n"
    body += table(["streams", "aggregate tok/s ratio", "TTFT p50 ratio"], ratios(results))
    return body


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.grpc_bench", description=__doc__)
    parser.add_argument("--http", help="a running server's HTTP URL (default: start one)")
    parser.add_argument("--grpc", help="the same server's gRPC host:port")
    parser.add_argument("--levels", type=int, nargs="+", default=list(LEVELS))
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md")
    args = parser.parse_args(argv)
    if bool(args.http) != bool(args.grpc):
        parser.error("give both --http and --grpc, or neither")
    server: Process | None = None
    http_url, grpc_target = args.http, args.grpc
    if http_url is None:
        port, gport = free_port(), free_port()
        cmd = [sys.executable, "-m", "ocak", "serve", "--model", "default"]
        cmd += ["--port", str(port), "--grpc-port", str(gport), "--parallel", "16"]
        cmd += ["--ctx-size", str(CTX), "--threads", str(THREADS), "--max-queue", "64"]
        cmd += ["--log-level", "warning"]
        server = Process("ocak-grpc", cmd, port).wait()
        http_url, grpc_target = server.url, f"127.0.0.1:{gport}"
    try:
        results = compare(http_url, grpc_target, args.levels, rounds=args.rounds)
    finally:
        if server is not None:
            server.stop()
    command = "python -m bench.grpc_bench " + " ".join(argv if argv is not None else sys.argv[1:])
    body = report(results, command.strip(), args.rounds)
    if not args.no_write:
        write_section("grpc", "gRPC beside HTTP: time to first token and tokens/s", body)
    print(body)


if __name__ == "__main__":
    main()
