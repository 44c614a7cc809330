"""``python -m bench [NAME ...]``: run benchmarks (default: serving).

Each benchmark module is imported only when asked for, so one with missing
optional dependencies does not stop the others.
"""

from __future__ import annotations

import argparse
import importlib

BENCHES = {
    "serving": "bench.serving",
    "characters": "bench.characters",
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", default=["serving"], choices=[*BENCHES, "all"])
    args = parser.parse_args()
    names = list(BENCHES) if "all" in args.names else args.names
    for name in names:
        print(f"== {name}", flush=True)
        importlib.import_module(BENCHES[name]).main()


if __name__ == "__main__":
    main()
