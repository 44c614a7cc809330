"""Beside a game: how much a CPU-bound stand-in for a game slows down while ocak serves
character turns, at normal priority and with ``--priority low``.

The stand-in is a child process pinned to one core that renders "frames" (a fixed
amount of hashing each) as fast as it can and counts them. Three phases, each
``OCAK_BENCH_GAME_SECONDS`` long, in one run: the stand-in alone, beside ``ocak serve``
playing character turns back to back (example NPC, streaming), and the same beside
``ocak serve --priority low``. Reported: frames per second and the slowdown against
alone, and the character turns' times in each phase.
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing as mp
import os
import sys
import tempfile
import time
from typing import Any

import httpx

from bench.characters import LINES, Turn, stream_turn
from bench.common import ROOT, Process, free_port, header, percentile, table, write_section

SECONDS = float(os.environ.get("OCAK_BENCH_GAME_SECONDS", "20"))
FRAME = b"x" * 65536


def game(seconds: float, out: Any) -> None:
    """The stand-in: frames of hashing on core 0 for ``seconds``; frames per second."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    frames = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(20):
            hashlib.sha256(FRAME).digest()
        frames += 1
    out.put(frames / seconds)


def measure_game(seconds: float) -> mp.Process:
    queue: Any = mp.Queue()
    proc = mp.Process(target=game, args=(seconds, queue))
    proc.start()
    proc.queue = queue  # type: ignore[attr-defined]
    return proc


async def turns_for(url: str, seconds: float) -> list[Turn]:
    """Character turns back to back for ``seconds`` (one session, like one player)."""
    async with httpx.AsyncClient(base_url=url, timeout=300) as http:
        r = await http.post(
            "/v1/sessions", json={"player_id": f"game-{time.time()}", "characters": ["bram"]}
        )
        r.raise_for_status()
        sid = r.json()["id"]
        out: list[Turn] = []
        end = time.perf_counter() + seconds
        i = 0
        while time.perf_counter() < end:
            out.append(await stream_turn(http, sid, LINES[i % len(LINES)], i))
            i += 1
        return out


def phase(url: str | None) -> tuple[float, list[Turn]]:
    proc = measure_game(SECONDS)
    turns = asyncio.run(turns_for(url, SECONDS)) if url else []
    proc.join()
    return float(proc.queue.get()), turns  # type: ignore[attr-defined]


# ocak's flags in each phase: priority alone, and priority with one core left to the game
PHASES = [
    ("--priority normal", ["--priority", "normal"]),
    ("--priority low", ["--priority", "low"]),
    (f"--priority low --threads {max(1, (os.cpu_count() or 2) - 1)}",
     ["--priority", "low", "--threads", str(max(1, (os.cpu_count() or 2) - 1))]),
]  # fmt: skip


def serve(name: str, flags: list[str]) -> Process:
    data = tempfile.mkdtemp(prefix="ocak-bench-game-")
    port = free_port()
    cmd = [sys.executable, "-m", "ocak", "serve", "--port", str(port), *flags]
    cmd += ["--parallel", "2", "--ctx-size", "2048"]
    os.environ["OCAK_DATA_DIR"] = data
    server = Process(f"ocak-game-{len(name)}", cmd, port).wait()
    card = (ROOT / "examples" / "characters" / "bram.yaml").read_bytes()
    httpx.post(f"{server.url}/v1/characters/import", content=card, timeout=60).raise_for_status()
    return server


def main() -> None:
    rows: list[list[Any]] = []
    print("stand-in alone ...", flush=True)
    alone, _ = phase(None)
    rows.append(["alone", alone, 1.0, 0, float("nan"), float("nan")])
    for name, flags in PHASES:
        server = serve(name, flags)
        try:
            print(f"beside ocak {name} ...", flush=True)
            fps, turns = phase(server.url)
        finally:
            server.stop()
        ok = [t.complete for t in turns if t.ok]
        rows.append(
            [
                f"beside ocak {name}",
                fps,
                alone / fps if fps else float("nan"),
                len(ok),
                percentile(ok, 50),
                percentile(ok, 95),
            ]
        )
    body = header("make bench ARGS=beside_game", "llama-cpp-python") + "\n"
    body += (
        f"A game stand-in pinned to core 0 (hashing 'frames' flat out) for {SECONDS:.0f} s "
        "alone, then beside `ocak serve` (default threads: all cores) playing streaming "
        "character turns back to back with the example NPC (one player), at normal priority, "
        "with `--priority low` (nice 10 on Linux), and with `--priority low` and one core "
        "left to the game (`--threads`).\n\n"
    )
    body += table(
        ["phase", "frames/s", "slowdown (x)", "turns", "turn p50 (s)", "turn p95 (s)"], rows
    )
    write_section("beside_game", "Beside a game (--priority low)", body)
    print(body)


if __name__ == "__main__":
    main()
