"""Characters benchmark: time to the first spoken text and to the complete packet.

Starts ``ocak serve`` on the default model with a fresh data folder, adds the
example NPC (``examples/characters/bram.yaml``), and plays streaming turns:
one session alone, then 8 sessions at once. For each turn it measures the time
from the request to the first ``text`` event (what a game can start speaking)
and to the ``done`` event (the whole packet: emotion, actions, relationship,
committed to the store), plus the share of prompt tokens served from the
prefix cache.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import httpx

from bench.common import ROOT, Process, free_port, header, percentile, table, write_section

TURNS_SINGLE = int(os.environ.get("OCAK_BENCH_CHAR_TURNS", "6"))
SESSIONS = 8
TURNS_EACH = int(os.environ.get("OCAK_BENCH_CHAR_TURNS_EACH", "2"))
LINES = [
    "Hello there! Who are you?",
    "Can you give me a dagger? I have coin.",
    "What happened to the mill?",
    "Is the road north safe?",
    "Thanks. Will you follow me north?",
    "Tell me about your brother.",
]


@dataclass
class Turn:
    ok: bool
    first_text: float = float("nan")
    complete: float = float("nan")
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


async def stream_turn(http: httpx.AsyncClient, sid: str, text: str, seed: int) -> Turn:
    body = {"text": text, "stream": True, "seed": seed}
    start = time.perf_counter()
    first = float("nan")
    try:
        async with http.stream("POST", f"/v1/sessions/{sid}/messages", json=body) as r:
            if r.status_code != 200:
                await r.aread()
                return Turn(False, error=f"HTTP {r.status_code}: {r.text[:200]}")
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                event = json.loads(line[6:])
                if event["type"] == "text" and first != first:
                    first = time.perf_counter() - start
                elif event["type"] == "error":
                    return Turn(False, error=str(event["error"])[:200])
                elif event["type"] == "done":
                    usage = event["turn"]["usage"]
                    return Turn(
                        True,
                        first,
                        time.perf_counter() - start,
                        usage["prompt_tokens"],
                        usage["cached_tokens"],
                        usage["completion_tokens"],
                    )
    except httpx.HTTPError as exc:
        return Turn(False, error=f"{type(exc).__name__}: {exc}")
    return Turn(False, error="stream ended without a done event")


async def play(url: str, sessions: int, turns: int) -> tuple[list[Turn], float]:
    async with httpx.AsyncClient(base_url=url, timeout=900) as http:
        ids = []
        for i in range(sessions):
            r = await http.post(
                "/v1/sessions",
                json={"player_id": f"bench{i}-{time.time()}", "characters": ["bram"]},
            )
            r.raise_for_status()
            ids.append(r.json()["id"])

        async def one(i: int) -> list[Turn]:
            out = []
            for j in range(turns):
                out.append(await stream_turn(http, ids[i], LINES[(i + j) % len(LINES)], j))
            return out

        start = time.perf_counter()
        results = await asyncio.gather(*(one(i) for i in range(sessions)))
        return [t for ts in results for t in ts], time.perf_counter() - start


def row(name: str, turns: list[Turn], wall: float) -> list[Any]:
    ok = [t for t in turns if t.ok]
    spoken = [t.first_text for t in ok if t.first_text == t.first_text]  # some packets say nothing
    prompt = sum(t.prompt_tokens for t in ok)
    cached = sum(t.cached_tokens for t in ok)
    completion = sum(t.completion_tokens for t in ok)
    return [
        name,
        len(ok),
        len(turns) - len(ok),
        percentile(spoken, 50),
        percentile(spoken, 95),
        percentile([t.complete for t in ok], 50),
        percentile([t.complete for t in ok], 95),
        completion / len(ok) if ok else float("nan"),
        f"{100 * cached / prompt:.0f}%" if prompt else "-",
        completion / wall if wall else float("nan"),
    ]


def main() -> None:
    data = tempfile.mkdtemp(prefix="ocak-bench-characters-")
    port = free_port()
    cmd = [sys.executable, "-m", "ocak", "serve", "--port", str(port), "--parallel", "8"]
    cmd += ["--ctx-size", "2048"]
    os.environ["OCAK_DATA_DIR"] = data
    server = Process("ocak-characters", cmd, port).wait()
    try:
        card = (ROOT / "examples" / "characters" / "bram.yaml").read_bytes()
        httpx.post(
            f"{server.url}/v1/characters/import", content=card, timeout=60
        ).raise_for_status()
        print("single session ...", flush=True)
        single, wall1 = asyncio.run(play(server.url, 1, TURNS_SINGLE))
        print(f"{SESSIONS} concurrent sessions ...", flush=True)
        multi, wall8 = asyncio.run(play(server.url, SESSIONS, TURNS_EACH))
    finally:
        server.stop()
    errors = [t.error for t in single + multi if not t.ok]
    rows = [
        row("1 session", single, wall1),
        row(f"{SESSIONS} sessions at once", multi, wall8),
    ]
    body = header("python -m bench characters", "llama-cpp-python", "llguidance", "fastapi") + (
        "\nThe example NPC (`examples/characters/bram.yaml`, text up to 160 characters, "
        "three actions, a lorebook) on the default model (SmolLM2-135M Q4_1), streaming "
        f"turns (`stream: true`), `--parallel 8 --ctx-size 2048`: {TURNS_SINGLE} turns in one "
        f"session, then {SESSIONS} sessions of {TURNS_EACH} turns at once. *First text*: "
        "request to the first `text` event; *packet*: to the `done` event (emotion, "
        "actions, relationship known and the turn committed). *Cached*: share of prompt "
        "tokens reused from the KV cache (persona and history as a stable prefix).\n\n"
        + table(
            [
                "load",
                "turns",
                "errors",
                "first text p50 (s)",
                "first text p95 (s)",
                "packet p50 (s)",
                "packet p95 (s)",
                "tokens/packet",
                "cached",
                "aggregate tokens/s",
            ],
            rows,
        )
    )
    if errors:
        body += "\n\nErrors: " + "; ".join(sorted(set(e or "?" for e in errors)))[:1000]
    write_section("characters", "Characters: time to first text and to the packet", body)
    print(body)


if __name__ == "__main__":
    main()
