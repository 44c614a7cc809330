"""What tracing costs in the gateway: ocak with tracing off and on, side by side, in front
of the gateway benchmark's stub upstream, in one run.

    python -m bench.gateway --tracing            # writes its section of BENCHMARKS.md
    python -m bench.gateway --tracing --quick    # shorter phases, for a look

What runs (each in its own process): the stub upstream of bench/gateway.py (about 4 ms
an answer); a test OTLP/HTTP collector (decodes each export's protobuf and counts the
spans); two ``ocak serve`` with the same alias on the stub, an API key and usage records,
one without ``otlp_endpoint`` (off, the default) and one exporting every request's spans
to the collector (on, sample ratio 1). Open-loop load at 20 requests/s, non-streaming and
streaming, phases interleaved over rounds. Reported: p50/p99 and the added p50/p99 over
the stub called directly; the on/off ratio of the added p50; each ocak's CPU time per
request (from /proc); the spans the collector received; and what the off path does per
request, timed in-process (the helpers' early returns), against the round-to-round
spread of the p50, which is what "within noise" is measured by.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import timeit
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.common import ROOT, Process, free_port, header, table, write_section
from bench.gateway import LATENCY_RATE, Phase, Target, open_loop, start_ocak, start_stub

ROUNDS, SECONDS = 3, 8.0
QUICK_ROUNDS, QUICK_SECONDS = 1, 4.0


# -- the collector -----------------------------------------------------------------------


def serve_collector(port: int) -> None:
    """POST /v1/traces (OTLP/HTTP protobuf) counted; GET /count answers the totals."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )

    counts = {"exports": 0, "spans": 0}
    answer = ExportTraceServiceResponse().SerializeToString()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(counts).encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            data = self.rfile.read(int(self.headers.get("content-length", "0")))
            request = ExportTraceServiceRequest.FromString(data)
            counts["exports"] += 1
            counts["spans"] += sum(
                len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans
            )
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def collector_counts(url: str) -> dict[str, int]:
    import httpx

    counts: dict[str, int] = httpx.get(f"{url}/count", timeout=5).json()
    return counts


# -- the servers -------------------------------------------------------------------------


def cpu_seconds(target: Target) -> float:
    """User and system CPU time of the target's process so far."""
    assert target.process is not None
    fields = Path(f"/proc/{target.process.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the off path, in-process ------------------------------------------------------------


def off_path_seconds() -> float:
    """Seconds per request of what tracing off adds to a gateway request: each helper the
    request passes through, returning at once (no trace in the context)."""
    from ocak import telemetry
    from ocak.protocol.openai import ChatCompletionRequest
    from ocak.serving import spans
    from ocak.telemetry import Tracing

    tracing = Tracing()
    body = ChatCompletionRequest.model_validate(
        {"model": "bench", "messages": [{"role": "user", "content": "Say hi."}]}
    )

    def one_request() -> None:
        if tracing.enabled:  # RequestTracking
            raise AssertionError("tracing is on")
        span = spans.model_call(body)  # ModelServing.admit
        with telemetry.active(span), telemetry.span("admission"):
            pass
        spans.admitted(span, body)
        with telemetry.active(span):  # ModelServing.serve, around the router
            telemetry.current()  # Router._attempt
        spans.served(span, None, None)  # type: ignore[arg-type]

    n = 200_000
    return min(timeit.repeat(one_request, number=n, repeat=5)) / n


# -- the run -----------------------------------------------------------------------------


async def measure(targets: list[Target], rounds: int, seconds: float) -> dict[str, Any]:
    for t in targets:  # warm connections and first-request paths
        for stream in (False, True):
            await open_loop(t, LATENCY_RATE, 1.0, stream)
    phases: dict[tuple[str, bool], Phase] = {}
    round_p50: dict[tuple[str, bool], list[float]] = {}
    cpu: dict[str, float] = {t.name: 0.0 for t in targets if t.name != "direct"}
    served: dict[str, int] = dict.fromkeys(cpu, 0)
    for r in range(rounds):
        for stream in (False, True):
            for t in targets:
                before = cpu_seconds(t) if t.name in cpu else 0.0
                phase = await open_loop(t, LATENCY_RATE, seconds, stream)
                if t.name in cpu:
                    cpu[t.name] += cpu_seconds(t) - before
                    served[t.name] += len(phase.latencies)
                total = phases.setdefault((t.name, stream), Phase())
                total.latencies += phase.latencies
                total.errors += phase.errors
                total.first_error = total.first_error or phase.first_error
                round_p50.setdefault((t.name, stream), []).append(phase.p(50))
                print(
                    f"round {r + 1} {t.name:10s} {'stream' if stream else 'whole':6s} "
                    f"p50 {phase.p(50) * 1000:6.2f} ms p99 {phase.p(99) * 1000:6.2f} ms "
                    f"errors {phase.errors}",
                    flush=True,
                )
    return {"phases": phases, "round_p50": round_p50, "cpu": cpu, "served": served}


def report(results: dict[str, Any], spans: dict[str, int], off_s: float, command: str) -> str:
    phases: dict[tuple[str, bool], Phase] = results["phases"]
    round_p50: dict[tuple[str, bool], list[float]] = results["round_p50"]
    cpu, served = results["cpu"], results["served"]
    rows, checks = [], []
    for stream in (False, True):
        base = phases[("direct", stream)]
        for name in ("direct", "tracing-off", "tracing-on"):
            p = phases[(name, stream)]
            added50 = p.p(50) - base.p(50) if name != "direct" else float("nan")
            added99 = p.p(99) - base.p(99) if name != "direct" else float("nan")
            spread = round_p50[(name, stream)]
            rows.append(
                (
                    name,
                    "yes" if stream else "no",
                    p.p(50) * 1000,
                    p.p(99) * 1000,
                    added50 * 1000,
                    added99 * 1000,
                    (max(spread) - min(spread)) * 1000,
                    p.errors,
                )
            )
        off = phases[("tracing-off", stream)].p(50) - base.p(50)
        on = phases[("tracing-on", stream)].p(50) - base.p(50)
        kind = "streaming" if stream else "non-streaming"
        ratio = on / off if off > 0 else float("nan")
        checks.append(
            (f"added p50 on / off, {kind}", f"{on * 1000:.2f} / {off * 1000:.2f} ms = {ratio:.2f}x")
        )
        checks.append((f"p50 on minus off, {kind}", f"{(on - off) * 1000:+.2f} ms"))
        spread = round_p50[("tracing-off", stream)]
        checks.append(
            (
                f"tracing off: round-to-round p50 spread, {kind}",
                f"{(max(spread) - min(spread)) * 1000:.2f} ms",
            )
        )
    per_request = {n: cpu[n] / served[n] * 1000 if served[n] else float("nan") for n in cpu}
    differences = [
        phases[("tracing-on", st)].p(50) - phases[("tracing-off", st)].p(50) for st in (False, True)
    ]
    spreads = [
        max(round_p50[("tracing-off", st)]) - min(round_p50[("tracing-off", st)])
        for st in (False, True)
    ]
    checks.append(
        (
            "CPU per request, ocak process: off / on",
            f"{per_request['tracing-off']:.2f} / {per_request['tracing-on']:.2f} ms",
        )
    )
    checks.append(("tracing off: its helpers' work per request (timeit)", f"{off_s * 1e6:.2f} µs"))
    traced = served["tracing-on"]
    checks.append(
        (
            "spans received by the collector (on, warm-up included)",
            f"{spans['spans']} in {spans['exports']} exports, "
            f"{spans['spans'] / traced if traced else 0:.1f} per request",
        )
    )
    return (
        header(command, "ocak", "opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http")
        + "\nThe gateway benchmark's stub upstream (about 4 ms an answer); two `ocak serve` "
        "with the same alias on it, an API key and a usage record per request: tracing off "
        "(no `otlp_endpoint`, the default) and tracing on (every request's spans batched to "
        "a local OTLP/HTTP collector, its own process, sample ratio 1). Open loop at "
        f"{LATENCY_RATE:.0f} requests/s, chat completions with 8 tokens, streamed or not, "
        "phases interleaved across servers; added = the server's percentile minus the "
        "stub's own; spread = the largest minus the smallest p50 of one server over the "
        "rounds (the noise). Shared 2-core machine: compare within the run.\n\n"
        + table(
            [
                "server",
                "stream",
                "p50 ms",
                "p99 ms",
                "added p50 ms",
                "added p99 ms",
                "p50 spread ms",
                "errors",
            ],
            rows,
        )
        + "\n\n"
        + table(["measure", "result"], checks)
        + "\n\n"
        + reading(
            differences, spreads, per_request["tracing-off"], per_request["tracing-on"], off_s
        )
        + "\n"
    )


def reading(
    differences: list[float], spreads: list[float], cpu_off: float, cpu_on: float, off_s: float
) -> str:
    """The figures in words: on against off within the noise, and what each costs."""
    on = " and ".join(f"{d * 1000:+.2f} ms" for d in differences)
    noise = " and ".join(f"{s * 1000:.2f} ms" for s in spreads)
    return (
        f"Reading: tracing on moved the p50 by {on} (non-streaming and streaming) against a "
        f"round-to-round p50 spread of {noise} for tracing off; its cost shows in CPU: "
        f"{cpu_on - cpu_off:+.2f} ms per request in the ocak process "
        f"({(cpu_on / cpu_off - 1) * 100:+.0f}%), spans batched and exported from the SDK's "
        f"thread. Tracing off adds {off_s * 1e6:.1f} µs of work per request, far below what "
        "this benchmark can see."
    )


def run(quick: bool) -> None:
    work = ROOT / "bench" / "out" / "gateway-tracing"
    work.mkdir(parents=True, exist_ok=True)
    started: list[Target] = []
    collector: Process | None = None
    try:
        stub = start_stub()
        started.append(stub)
        port = free_port()
        collector = Process(
            "collector",
            [sys.executable, "-m", "bench.gateway_tracing", "--collector", str(port)],
            port,
            ready_path="/count",
        ).wait(60)
        started.append(start_ocak(stub, work, "tracing-off"))
        started.append(start_ocak(stub, work, "tracing-on", f"otlp_endpoint: '{collector.url}'\n"))
        rounds, seconds = (QUICK_ROUNDS, QUICK_SECONDS) if quick else (ROUNDS, SECONDS)
        results = asyncio.run(measure(started, rounds, seconds))
        for t in started:  # SIGTERM: the traced server sends its last batch as it stops
            if t.process is not None:
                t.process.stop()
        spans = collector_counts(collector.url)
    finally:
        for t in started:
            if t.process is not None:
                t.process.stop()
        if collector is not None:
            collector.stop()
    off_s = off_path_seconds()
    command = "python -m bench.gateway --tracing" + (" --quick" if quick else "")
    body = report(results, spans, off_s, command)
    print(body)
    write_section("gateway-tracing", "Tracing cost in the gateway: off and on", body)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--collector"]:
        serve_collector(int(sys.argv[2]))
    else:
        run("--quick" in sys.argv)
