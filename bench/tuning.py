"""Fine-tuning the bundled SmolLM2-135M on the catch-phrase task (tests/tuning_task.py):
training time, peak memory and the before/after pass rates, for a small grid of steps,
learning rates and ranks, each over several seeds.

Each run is the real thing: ``python -m ocak.tuning.worker`` (2 torch threads, low
priority) trains a LoRA from the 40 training examples and writes the GGUF LoRA; ocak's
llama.cpp engine then answers the 12 held-out prompts greedily (48 tokens) with the
adapter, and a run passes a prompt when "By the old oak!" is in the answer. The base
model's pass rate is measured once. Wall time is the worker's own (start to done,
loading included); peak RSS is the worker's (``ru_maxrss``) beside its estimate.

``python -m bench tuning`` (about 7 minutes on 2 cores); ``--quick``: the default
configuration only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, header, table, write_section

# (label, steps as epochs of the 40 examples at batch 4, learning-rate multiplier, rank)
GRID: list[tuple[str, int | None, float, int]] = [
    ("5 steps", 5, 5.0, 8),
    ("10 steps", 10, 5.0, 8),
    ("20 steps (the e2e test)", 20, 5.0, 8),
    ("20 steps, lr 5e-4", 20, 2.5, 8),
    ("20 steps, rank 4", 20, 5.0, 4),
]
SEEDS = (0, 1, 2)


def train_once(
    folder: Path, data: Path, steps: int | None, mult: float, rank: int, seed: int
) -> dict[str, Any]:
    """One worker run; its record, with the wall time."""
    from ocak.tuning import TuneSpec
    from ocak.tuning.worker import command

    epochs = max(1, -(-(steps or 10) // 10))
    spec = TuneSpec(
        training_file=str(data),
        hyperparameters={"n_epochs": epochs, "batch_size": 4, "learning_rate_multiplier": mult},
        lora={"rank": rank, "alpha": 2.0 * rank},
        seed=seed,
        max_steps=steps,
        threads=2,
    )
    spec_path, out = folder / "spec.json", folder / f"out-{time.monotonic_ns()}"
    spec_path.write_text(spec.model_dump_json())
    start = time.monotonic()
    proc = subprocess.run(command(spec_path, out), capture_output=True, text=True, check=False)
    wall = time.monotonic() - start
    last = json.loads(proc.stdout.splitlines()[-1])
    if last["event"] != "done":
        raise SystemExit(f"training failed: {last}\n{proc.stderr[-2000:]}")
    return {**last["record"], "wall": wall, "adapter": out / "adapter.gguf"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench tuning")
    parser.add_argument("--quick", action="store_true", help="the e2e test's configuration only")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests"))
    from ocak.models.store import default_model_path
    from tuning_task import HELD_OUT, PHRASE, greedy_answers, passes, write_training_file

    base_model = default_model_path()
    grid = [g for g in GRID if g[0].endswith("(the e2e test)")] if args.quick else GRID
    base_answers = greedy_answers(base_model, HELD_OUT)
    base_rate = sum(map(passes, base_answers)) / len(HELD_OUT)
    print(f"base: {base_rate:.0%} of held-out answers say the phrase", flush=True)
    rows, sample = [], ""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = write_training_file(folder / "train.jsonl")
        for label, steps, mult, rank in grid:
            rates, walls, peaks, estimates, losses = [], [], [], [], []
            for seed in SEEDS:
                record = train_once(folder, data, steps, mult, rank, seed)
                answers = greedy_answers(base_model, HELD_OUT, record["adapter"])
                rates.append(sum(map(passes, answers)) / len(HELD_OUT))
                walls.append(record["wall"])
                peaks.append(record["peak_rss"] / 2**20)
                estimates.append(record["estimate"]["total"] / 2**20)
                losses.append(record["train_loss"])
                if label.endswith("(the e2e test)") and seed == 0:
                    sample = answers[2]
                print(f"{label}, seed {seed}: pass {rates[-1]:.0%}, {walls[-1]:.1f} s, "
                      f"peak {peaks[-1]:.0f} MiB, loss {losses[-1]:.2f}", flush=True)  # fmt: skip
            lr = mult * 2e-4
            rows.append([
                label, f"{lr:.0e}", rank, " / ".join(f"{r:.0%}" for r in rates),
                sum(walls) / len(walls), max(peaks), max(estimates), sum(losses) / len(losses),
            ])  # fmt: skip
    body = (
        header("python -m bench tuning", "torch", "transformers", "peft", "llama-cpp-python")
        + f"\nThe bundled SmolLM2-135M (Q4_1, dequantized to float32 for training) learns to end "
        f'every answer with "{PHRASE}": 40 training examples, batch 4, LoRA on every projection '
        "of every layer (alpha = 2 x rank), 2 torch threads, the worker at low priority. Pass "
        "rate: held-out prompts (12, none in training) whose greedy answer (48 tokens, served "
        "by ocak's llama.cpp engine with the GGUF LoRA) says the phrase, per seed. Time: the "
        "worker from start to done (about 10 s of it loading). Peak RSS: the worker's, "
        f"beside its estimate.\n\nBase model: {base_rate:.0%} pass.\n\n"
        + table(
            [
                "run",
                "lr",
                "rank",
                "pass (seeds 0/1/2)",
                "time (s)",
                "peak RSS (MiB)",
                "estimate (MiB)",
                "final loss",
            ],
            rows,
        )
        + f'\n\nA tuned answer (20 steps, seed 0): "{sample}"\n'
    )
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    model = [line.split(":", 1)[1].strip() for line in cpu.splitlines() if "Model name" in line]
    body = body.replace("Python ", f"CPU (lscpu): {model[0] if model else '?'}  \nPython ", 1)
    write_section("tuning", "Fine-tuning: a LoRA on the default model, on 2 cores", body)
    print(body)


if __name__ == "__main__":
    main()
