"""CTranslate2 serving: single stream and concurrency, over real HTTP.

``python -m bench.ct2`` converts the embedded GGUF to CTranslate2 int8 (once: the
converter finds it on later runs), starts ``ocak serve`` on it for each engine
configuration, and streams greedy chat completions at each concurrency level.
Two prompt sets: "same" (one prompt, every batch is full) and "mixed" (prompts of
different lengths, where the batching policy matters). The main benchmark can
call ``measure`` for its CTranslate2 rows.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import LevelResult, Process, free_port, header, run_level, table, write_section

MAX_TOKENS = 64
LEVELS = (1, 8)
NAME = "smollm2-135m-instruct-int8"
# (batching policy, CTranslate2 workers)
CONFIGS: tuple[tuple[str, int], ...] = (("exact", 1), ("similar", 1))
TOPICS = [
    "a cat",
    "a lighthouse keeper on a small island in the north",
    "two friends",
    "a robot who learns to paint portraits of the people in its village",
    "the sea",
    "a baker who opens a shop in a mountain town where nobody eats bread",
    "a lost key",
    "an old map",
]


@dataclass
class Row:
    engine: str
    prompts: str
    batching: str
    workers: int
    level: LevelResult


def body(prompts: str, i: int) -> dict[str, Any]:
    topic = TOPICS[0] if prompts == "same" else TOPICS[i % len(TOPICS)]
    return {
        "model": "default",
        "messages": [{"role": "user", "content": f"Write a long story about {topic}."}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def converted_model(data_dir: Path | None = None) -> Path:
    """The default model as CTranslate2 int8 in ocak's store (converted if missing)."""
    from ocak.config import Settings
    from ocak.models.store import default_model_path

    env = dict(os.environ)
    if data_dir is not None:
        env["OCAK_DATA_DIR"] = str(data_dir)
    store = Settings(**({"data_dir": data_dir} if data_dir else {})).model_dir
    cmd = [sys.executable, "-m", "ocak", "models", "convert", str(default_model_path())]
    cmd += ["--name", NAME, "--quantization", "int8"]
    subprocess.run(cmd, env=env, check=True)
    return store / NAME


def start(model: Path | None, batching: str, workers: int, threads: int) -> Process:
    """``ocak serve`` on the CTranslate2 model (``model``) or, with None, the GGUF on llama.cpp."""
    port = free_port()
    env = {"OCAK_CT2_BATCHING": batching, "OCAK_CT2_WORKERS": str(workers)}
    os.environ.update(env)
    spec = f"default={model}" if model is not None else "default"
    cmd = [sys.executable, "-m", "ocak", "serve", "--model", spec]
    cmd += ["--port", str(port), "--threads", str(threads), "--parallel", "16"]
    cmd += ["--ctx-size", "1024", "--log-level", "warning"]
    try:
        name = f"ct2-{batching}-w{workers}" if model is not None else "llama.cpp"
        return Process(name, cmd, port).wait()
    finally:
        for k in env:
            del os.environ[k]


def measure(
    model: Path | None = None,
    *,
    levels: Sequence[int] = LEVELS,
    configs: Sequence[tuple[str, int]] = CONFIGS,
    prompt_sets: Sequence[str] = ("same", "mixed"),
    threads: int | None = None,
    llamacpp: bool = True,
) -> list[Row]:
    """Stream ``2 x level`` requests at each level, per configuration and prompt set.

    All servers run at once and take turns at every level (the machine's load moves
    from minute to minute; interleaving keeps the comparison within one moment).
    llama.cpp on the same model's GGUF runs beside them as the reference.
    """
    model = model or converted_model()
    threads = threads or os.cpu_count() or 2
    servers: list[tuple[str, str, int, Process]] = []
    rows: list[Row] = []
    try:
        for batching, workers in configs:
            servers.append(
                ("ctranslate2", batching, workers, start(model, batching, workers, threads))
            )
        if llamacpp:
            servers.append(("llama.cpp", "continuous", 1, start(None, "exact", 1, threads)))
        for *_, server in servers:
            url = f"{server.url}/v1/chat/completions"
            asyncio.run(run_level(url, 1, 1, lambda i: body("same", i)))  # warm-up
        for prompts in prompt_sets:
            for level in levels:
                for engine, batching, workers, server in servers:
                    url = f"{server.url}/v1/chat/completions"
                    result = asyncio.run(
                        run_level(url, level, 2 * level, lambda i, p=prompts: body(p, i))
                    )
                    rows.append(Row(engine, prompts, batching, workers, result))
                    print(
                        f"{engine:11s} {prompts:5s} {batching:10s} w{workers} x{level}: "
                        f"{result.aggregate_tps:6.1f} tok/s, {result.errors} errors",
                        flush=True,
                    )
    finally:
        for *_, server in servers:
            server.stop()
    return rows


def report(rows: list[Row], command: str) -> str:
    single: dict[tuple[str, str, str, int], float] = {}
    for r in rows:
        if r.level.concurrency == 1:
            single[(r.engine, r.prompts, r.batching, r.workers)] = r.level.aggregate_tps
    lines = []
    for r in sorted(rows, key=lambda r: (r.engine != "ctranslate2", r.engine, r.batching)):
        base = single.get((r.engine, r.prompts, r.batching, r.workers), 0.0)
        lines.append(
            [
                r.engine,
                r.prompts,
                r.batching,
                r.workers,
                r.level.concurrency,
                r.level.aggregate_tps,
                r.level.aggregate_tps / base if base else float("nan"),
                r.level.ttft(50),
                r.level.ttft(95),
                r.level.errors,
            ]
        )
    headers = [
        "engine",
        "prompts",
        "batching",
        "workers",
        "streams",
        "tok/s (all streams)",
        "x single stream",
        "TTFT p50 s",
        "TTFT p95 s",
        "errors",
    ]
    return (
        header(command, "ctranslate2", "tokenizers", "llama_cpp_python")
        + f"\nGreedy chat completions of {MAX_TOKENS} tokens on SmolLM2-135M-Instruct "
        "converted from the embedded GGUF to CTranslate2 int8, 2 requests per stream. "
        "`exact` batches only prompts of equal length (answers never depend on the batch); "
        "`similar` also batches close lengths; workers > 1 runs that many batches at once "
        "with the threads split between them. llama.cpp (ocak's continuous batching) serves "
        "the same model's GGUF (Q4_1) beside it, as the reference. All servers run at once "
        "and take turns at every level.\n\n" + table(headers, lines)
    )


def main(argv: list[str] | None = None) -> None:
    rows = measure()
    text = report(rows, "python -m bench.ct2")
    print(text)
    write_section("ctranslate2", "CTranslate2 engine: single stream and concurrency", text)


if __name__ == "__main__":
    main()
