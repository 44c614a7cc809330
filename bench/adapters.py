"""What mixing LoRA adapters costs: 8 streams on one ``ocak serve``, all on the base model,
all on one adapter, and spread over 2, 4 and 8 adapter sets at once.

llama.cpp applies adapters to a whole context, so ocak decodes each adapter set's
sequences in a call of its own: with k sets in use a step makes k passes over the
weights instead of one. The adapters are random rank-8 LoRAs on every layer's
attention (q, v), written for the bundled model with ``gguf`` (as the tests make
them); the streams are greedy, 128 tokens, unique prompts, closed loop. Each mix runs
``OCAK_BENCH_ADAPTER_ROUNDS`` times, interleaved with the others, and the table gives
aggregate tokens/s, its ratio to one adapter, and first-token times.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import (
    ROOT,
    LevelResult,
    Process,
    free_port,
    header,
    run_level,
    table,
    write_section,
)

ROUNDS = int(os.environ.get("OCAK_BENCH_ADAPTER_ROUNDS", "2"))
STREAMS = 8
TOKENS = 128
ADAPTERS = ["a1", "a2", "a3", "a4"]
# name -> the adapter set of stream i (None: the base model)
MIXES: dict[str, Any] = {
    "base model only": lambda i: None,
    "1 adapter": lambda i: ("a1", 1.0),
    "2 adapters": lambda i: (ADAPTERS[i % 2], 1.0),
    "4 adapters": lambda i: (ADAPTERS[i % 4], 1.0),
    "8 sets (4 adapters x 2 scales)": lambda i: (ADAPTERS[i % 4], 1.0 if i % 8 < 4 else 0.5),
}


def make_store(data: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from lora_files import random_lora  # the tests' writer: one way to make adapters
    from ocak.models.add import add_gguf
    from ocak.models.store import ModelStore, default_model_path

    store = ModelStore(data / "models")
    for seed, name in enumerate(ADAPTERS):
        path = random_lora(default_model_path(), data / f"{name}.gguf", seed=seed)
        add_gguf(store, path, name=name, base="default")


def body_for(mix: str, i: int, offset: int) -> dict[str, Any]:
    chosen = MIXES[mix](i % STREAMS)
    body: dict[str, Any] = {
        "model": "default",
        "messages": [{"role": "user", "content": f"Story {offset + i}: tell me a long tale."}],
        "max_tokens": TOKENS,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if chosen is not None:
        body["adapters"] = [{"name": chosen[0], "scale": chosen[1]}]
    return body


def main() -> None:
    data = Path(tempfile.mkdtemp(prefix="ocak-bench-adapters-"))
    make_store(data)
    os.environ["OCAK_DATA_DIR"] = str(data)
    port = free_port()
    cmd = [sys.executable, "-m", "ocak", "serve", "--port", str(port)]
    cmd += ["--parallel", str(STREAMS), "--ctx-size", "512"]
    server = Process("ocak-adapters", cmd, port).wait()
    results: dict[str, list[LevelResult]] = {m: [] for m in MIXES}
    url = f"{server.url}/v1/chat/completions"
    try:
        for mix in MIXES:  # warm: every adapter loaded, first-call costs paid
            asyncio.run(run_level(url, STREAMS, STREAMS, lambda i, m=mix: body_for(m, i, 0)))
        for r in range(ROUNDS):
            for n, mix in enumerate(MIXES):
                offset = 1000 * (r * len(MIXES) + n + 1)
                print(f"round {r + 1}: {mix} ...", flush=True)
                level = asyncio.run(
                    run_level(
                        url, STREAMS, 2 * STREAMS, lambda i, m=mix, o=offset: body_for(m, i, o)
                    )
                )
                if level.errors:
                    raise SystemExit(f"{mix}: {level.errors} errors: {level.results[0].error}")
                results[mix].append(level)
    finally:
        server.stop()

    def tps(mix: str) -> float:
        levels = results[mix]
        return sum(lv.aggregate_tps for lv in levels) / len(levels)

    single = tps("1 adapter")
    rows = [
        [
            mix,
            tps(mix),
            tps(mix) / single,
            sum(lv.ttft(50) for lv in results[mix]) / ROUNDS,
            max(lv.ttft(95) for lv in results[mix]),
        ]
        for mix in MIXES
    ]
    body = header("make bench ARGS=adapters", "llama-cpp-python") + "\n"
    body += (
        f"{STREAMS} streams at once on `ocak serve --parallel {STREAMS}` (the bundled "
        f"SmolLM2-135M Q4_1), greedy, {TOKENS} tokens each, {2 * STREAMS} requests per mix, "
        f"{ROUNDS} interleaved rounds; random rank-8 LoRA adapters on every layer's q and v "
        "projections, chosen with the request field `adapters`. llama.cpp sets adapters per "
        "context, so each adapter set in use is decoded in a call of its own.\n\n"
    )
    body += table(
        ["streams use", "tokens/s (aggregate)", "vs 1 adapter (x)", "TTFT p50 (s)", "TTFT p95 (s)"],
        rows,
    )
    write_section("adapters", "Mixing LoRA adapters", body)
    print(body)


if __name__ == "__main__":
    main()
