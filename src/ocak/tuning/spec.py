"""What a tuning job trains: the base, the data, the hyperparameters, the bounds.

``TuneSpec`` is plain data (pydantic, JSON both ways), so a job runner can write it to a
file for the worker process (``python -m ocak.tuning.worker SPEC.json OUT_DIR``) or
pickle it to another process. The hyperparameters are OpenAI's
(``n_epochs``, ``batch_size``, ``learning_rate_multiplier``, each a number or ``"auto"``);
``resolve`` turns ``"auto"`` into numbers for a given number of examples.

Learning rate: ``learning_rate = learning_rate_multiplier * BASE_LEARNING_RATE``
(2e-4, the usual LoRA rate; ``auto`` is a multiplier of 5, i.e. 1e-3, which the
135M default learns a new habit with in a few dozen steps: docs/tuning.md).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ocak.errors import InvalidRequest

BASE_LEARNING_RATE = 2e-4
AUTO_MULTIPLIER = 5.0
AUTO_EPOCHS = 3
AUTO_BATCH = 4
# Every linear projection of a transformer block (the names transformers gives them).
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

Auto = Literal["auto"]


class Hyperparameters(BaseModel):
    """OpenAI's supervised hyperparameters; ``"auto"`` is resolved per dataset."""

    model_config = ConfigDict(extra="forbid")

    n_epochs: int | Auto = Field("auto", description="Passes over the training file (1-50).")
    batch_size: int | Auto = Field("auto", description="Examples per optimizer step (1-64).")
    learning_rate_multiplier: float | Auto = Field(
        "auto", description=f"Times the base LoRA learning rate {BASE_LEARNING_RATE:g}."
    )


class LoraSettings(BaseModel):
    """The adapter's shape: rank, alpha (llama.cpp scales by alpha / rank) and targets."""

    model_config = ConfigDict(extra="forbid")

    rank: int = Field(8, ge=1, le=256)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    targets: tuple[str, ...] = Field(ALL_LINEAR, min_length=1)


class TuneSpec(BaseModel):
    """One training run. Paths are strings so the spec travels as JSON."""

    model_config = ConfigDict(extra="forbid")

    base: str = Field("default", description="A model spec: default, a store name, a GGUF path.")
    model_dir: str | None = Field(None, description="The model store that names resolve in.")
    training_file: str
    validation_file: str | None = None
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    seed: int = Field(42, ge=0, le=2**31 - 1)
    max_seq_len: int = Field(1024, ge=16, le=131072, description="Longer examples are cut.")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many steps.")
    threads: int | None = Field(None, ge=1, le=1024, description="torch threads (default: half).")
    memory_limit: int | None = Field(None, ge=0, description="Bytes the run may use at most.")
    checkpoints: bool = Field(False, description="Also write an adapter after each epoch.")
    ctranslate2: bool = Field(
        False,
        description="Also merge the adapter into the base and convert the result for "
        "CTranslate2 (int8 on CPU, float16 on a GPU), a model of its own beside the adapter.",
    )
    name: str | None = Field(None, description="Store the result as this adapter (manifest).")
    base_name: str | None = Field(None, description="The base's name in the manifest.")
    priority: Literal["normal", "low"] = Field("low", description="The worker's CPU priority.")

    @classmethod
    def from_json(cls, text: str | bytes) -> TuneSpec:
        """Parse a spec; a clear ``InvalidRequest`` naming the first bad field."""
        try:
            return cls.model_validate_json(text)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error["loc"]) or "spec"
            raise InvalidRequest(f"Bad tuning spec: {where}: {error['msg']}", param=where) from None

    def thread_count(self) -> int:
        return self.threads or max(1, (os.cpu_count() or 2) // 2)


@dataclass(frozen=True, slots=True)
class Resolved:
    """The hyperparameters a run uses, ``auto`` decided."""

    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    learning_rate: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _bounded(value: int | float, low: float, high: float, name: str) -> None:
    if not low <= value <= high:
        param = f"hyperparameters.{name}"
        raise InvalidRequest(f"{name} must be between {low:g} and {high:g}", param=param)


def resolve(h: Hyperparameters, n_examples: int) -> Resolved:
    """Numbers for ``auto``: 3 epochs (more for tiny files, so at least ~30 examples pass
    by), a batch of 4 (or the whole file when smaller), multiplier 5 (lr 1e-3)."""
    batch = min(AUTO_BATCH, max(1, n_examples)) if h.batch_size == "auto" else h.batch_size
    epochs = (
        max(AUTO_EPOCHS, min(10, math.ceil(30 / max(1, n_examples))))
        if h.n_epochs == "auto"
        else h.n_epochs
    )
    mult = AUTO_MULTIPLIER if h.learning_rate_multiplier == "auto" else h.learning_rate_multiplier
    _bounded(epochs, 1, 50, "n_epochs")
    _bounded(batch, 1, 64, "batch_size")
    _bounded(mult, 1e-3, 50, "learning_rate_multiplier")
    return Resolved(epochs, batch, float(mult), float(mult) * BASE_LEARNING_RATE)
