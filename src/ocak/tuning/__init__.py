"""Fine-tuning on the user's machine: LoRA adapters for GGUF chat models, trained with
peft and transformers (CPU, or a GPU torch sees), written as GGUF LoRA files that the
llama.cpp engine serves per request. See docs/tuning.md.

What a job runner calls:

- ``parse_training_data(bytes)`` / ``read_training_file(path)``: check an upload, line by
  line (``InvalidRequest`` naming ``line N: field``);
- ``prepare(spec)``: the checks a job can fail at creation (data, base, hyperparameters);
- ``train(spec, out_dir, on_progress, should_stop)``: the run itself;
- ``worker.command(spec_path, out_dir)``: the same in a worker process (JSON lines).

Needs the ``tune`` extra (peft on top of ``convert``'s torch, transformers and gguf).
"""

from ocak.tuning.base import UnsupportedBase, find_base
from ocak.tuning.data import Example, TrainingData, parse_training_data, read_training_file
from ocak.tuning.memory import Estimate, NotEnoughMemory
from ocak.tuning.spec import Hyperparameters, LoraSettings, Resolved, TuneSpec, resolve
from ocak.tuning.train import (
    ADAPTER_FILE,
    RECORD_FILE,
    Cancelled,
    TuneEvent,
    TuneResult,
    TuningError,
    prepare,
    remove_stale,
    train,
)

__all__ = [
    "ADAPTER_FILE",
    "RECORD_FILE",
    "Cancelled",
    "Estimate",
    "Example",
    "Hyperparameters",
    "LoraSettings",
    "NotEnoughMemory",
    "Resolved",
    "TrainingData",
    "TuneEvent",
    "TuneResult",
    "TuneSpec",
    "TuningError",
    "UnsupportedBase",
    "find_base",
    "parse_training_data",
    "prepare",
    "read_training_file",
    "remove_stale",
    "resolve",
    "train",
]
