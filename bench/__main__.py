"""``python -m bench [NAME ...]``: run benchmarks (default: all but the soak).

Each benchmark module is imported only when asked for, so one with missing
optional dependencies does not stop the others.
"""

from __future__ import annotations

import argparse
import importlib
import inspect

BENCHES = {
    "serving": "bench.serving",
    "constrained": "bench.constrained",
    "grpc": "bench.grpc_bench",
    "ctranslate2": "bench.ct2",
    "characters": "bench.characters",
    "gateway": "bench.gateway",
    "soak": "bench.soak",
    "beside_game": "bench.beside_game",
    "adapters": "bench.adapters",
    "voice": "bench.voice",
    "embeddings": "bench.embeddings",
    "retrieval": "bench.retrieval",
    "tuning": "bench.tuning",
    "tuning_latency": "bench.tuning_latency",
    "containers": "bench.containers",  # needs a Docker engine: named explicitly
}
# `make bench` runs these; the others are named explicitly (`make bench ARGS=soak`).
DEFAULT = [
    "serving",
    "constrained",
    "grpc",
    "ctranslate2",
    "characters",
    "beside_game",
    "adapters",
    "voice",
]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", default=DEFAULT, choices=[*BENCHES, "all"])
    args = parser.parse_args()
    names = list(BENCHES) if "all" in args.names else args.names
    for name in names:
        print(f"== {name}", flush=True)
        run = importlib.import_module(BENCHES[name]).main
        # Benchmarks with their own flags take an argv; give them none (their defaults).
        if inspect.signature(run).parameters:
            run([])
        else:
            run()


if __name__ == "__main__":
    main()
