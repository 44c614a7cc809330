"""Constrained decoding cost: tokens/s with and without a JSON schema, in one run.

Same server, same prompts, interleaved: free text against ``response_format``
with a schema (llguidance masks applied inside the batch loop), at one stream
and at eight. Target: the constraint costs at most 30% of the free rate.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from typing import Any

import httpx

from bench.common import Process, free_port, header, table, write_section

SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 80},
        "summary": {"type": "string", "maxLength": 400},
        "characters": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 30},
                    "age": {"type": "integer", "minimum": 0, "maximum": 120},
                    "role": {"enum": ["hero", "villain", "helper", "bystander"]},
                },
                "required": ["name", "age", "role"],
                "additionalProperties": False,
            },
            "maxItems": 4,
        },
    },
    "required": ["title", "summary", "characters"],
    "additionalProperties": False,
}
MAX_TOKENS = 128
ROUNDS = 3


def body(i: int, constrained: bool) -> dict[str, Any]:
    b: dict[str, Any] = {
        "model": "default",
        "messages": [
            {"role": "user", "content": f"Write a story ({i}) with a title, summary and cast."}
        ],
        "max_tokens": MAX_TOKENS,
        "temperature": 0.8,
        "seed": i,
    }
    if constrained:
        b["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "s", "schema": SCHEMA},
        }
    return b


async def one(http: httpx.AsyncClient, url: str, b: dict[str, Any]) -> tuple[int, float]:
    start = time.perf_counter()
    r = await http.post(url, json=b)
    elapsed = time.perf_counter() - start
    if r.status_code == 400 and r.json()["error"].get("code") == "output_truncated":
        # A schema answer cut by max_tokens: the tokens were still decoded.
        return MAX_TOKENS, elapsed
    r.raise_for_status()
    return int(r.json()["usage"]["completion_tokens"]), elapsed


async def level(url: str, concurrency: int, constrained: bool, start: int) -> float:
    """Aggregate completion tokens/s for ``concurrency`` simultaneous requests."""
    async with httpx.AsyncClient(timeout=600) as http:
        t0 = time.perf_counter()
        results = await asyncio.gather(
            *(one(http, url, body(start + k, constrained)) for k in range(concurrency))
        )
        wall = time.perf_counter() - t0
    return sum(tokens for tokens, _ in results) / wall


def main() -> None:
    port = free_port()
    srv = Process(
        "ocak-constrained",
        [
            sys.executable,
            "-m",
            "ocak",
            "serve",
            "--port",
            str(port),
            "--parallel",
            "8",
            "--log-level",
            "warning",
        ],
        port,
    ).wait()
    url = f"{srv.url}/v1/chat/completions"
    rates: dict[tuple[int, bool], list[float]] = {}
    try:
        # Warm up: the first constrained request builds llguidance's tokenizer (~1 s).
        asyncio.run(level(url, 1, True, 999))
        for r in range(ROUNDS):
            for c in (1, 8):
                for constrained in (False, True):
                    rate = asyncio.run(level(url, c, constrained, 100 * r))
                    rates.setdefault((c, constrained), []).append(rate)
                    print(f"c={c} constrained={constrained} {rate:.1f} tok/s", flush=True)
    finally:
        srv.stop()
    rows = []
    for c in (1, 8):
        free = statistics.median(rates[(c, False)])
        constrained = statistics.median(rates[(c, True)])
        rows.append([c, free, constrained, 1 - constrained / free, "<= 0.30"])
    text = header("python -m bench constrained", "ocak", "llguidance", "llama_cpp_python")
    text += (
        f"\nDefault model, chat with and without a JSON schema (`response_format`), "
        f"max_tokens {MAX_TOKENS}, temperature 0.8; {ROUNDS} interleaved rounds, medians. "
        "Tokens/s are completion tokens over wall time.\n\n"
    )
    text += table(
        ["streams", "free tok/s", "with schema tok/s", "cost (1 - ratio)", "target"], rows
    )
    write_section("constrained", "Constrained decoding cost", text)
    print(text)
