"""How much memory a tuning run needs at its peak, estimated before anything is loaded.

Four parts, in bytes:

- **weights**: every base parameter in float32 (the GGUF is dequantized), plus one more
  copy while loading (the GGUF loader's model and the rebuilt plain one overlap);
- **lora**: the adapter's parameters with their gradients and AdamW's two moments,
  4 x 4 bytes each;
- **activations**: what autograd keeps for the backward pass of one batch, per token and
  layer about ``ACT_PER_HIDDEN`` hidden-sized and ``ACT_PER_FFN`` feed-forward-sized
  float32 vectors, plus attention scores per head, plus the logits over the vocabulary
  (several float32 copies: logits, log-softmax, their gradients);
- **overhead**: a process with torch, transformers and peft imported;
- **merge** (only when the merged model is converted for CTranslate2): the converter
  loads the merged checkpoint (float32), builds a float32 spec and a quantized copy
  (at most float16), 4 + 4 + 2 bytes a parameter, less the loading overlap of the
  weights (4), gone by then.

The constants were measured on the 135M default (docs/tuning.md): the estimate is meant
to be above the measured peak RSS, never far below it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ocak.errors import OcakError
from ocak.tuning.base import BaseInfo

OVERHEAD = 700 * 2**20
ACT_PER_HIDDEN = 16
ACT_PER_FFN = 6
LOGIT_COPIES = 4


class NotEnoughMemory(OcakError):
    """The run's estimated peak does not fit in the memory this machine has free."""

    status = 400
    type = "invalid_request_error"
    code = "insufficient_memory"


@dataclass(frozen=True, slots=True)
class Estimate:
    weights: int
    lora: int
    activations: int
    overhead: int
    lora_params: int
    merge: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.lora + self.activations + self.overhead + self.merge

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total}


def lora_param_count(base: BaseInfo, rank: int, targets: tuple[str, ...]) -> int:
    """Parameters of a rank-``rank`` LoRA on ``targets`` of every layer (r x (in + out))."""
    head = base.hidden // max(1, base.heads)
    kv = head * base.kv_heads
    sizes = {
        "q_proj": (base.hidden, base.hidden),
        "k_proj": (base.hidden, kv),
        "v_proj": (base.hidden, kv),
        "o_proj": (base.hidden, base.hidden),
        "gate_proj": (base.hidden, base.intermediate),
        "up_proj": (base.hidden, base.intermediate),
        "down_proj": (base.intermediate, base.hidden),
    }
    per_layer = sum(rank * sum(sizes.get(t, (base.hidden, base.hidden))) for t in targets)
    return per_layer * base.layers


def estimate(
    base: BaseInfo,
    *,
    batch: int,
    seq_len: int,
    rank: int,
    targets: tuple[str, ...],
    merge: bool = False,
) -> Estimate:
    """The peak memory of training ``base`` on batches of ``batch`` x ``seq_len`` tokens
    (and of converting the merged model, with ``merge``)."""
    n_lora = lora_param_count(base, rank, targets)
    tokens = batch * seq_len
    per_token_layer = 4 * (
        ACT_PER_HIDDEN * base.hidden + ACT_PER_FFN * base.intermediate + 2 * base.heads * seq_len
    )
    logits = 4 * LOGIT_COPIES * tokens * base.vocab
    return Estimate(
        weights=2 * 4 * base.n_params,
        lora=16 * n_lora,
        activations=tokens * base.layers * per_token_layer + logits,
        overhead=OVERHEAD,
        lora_params=n_lora,
        merge=6 * base.n_params if merge else 0,
    )


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def check_fits(est: Estimate, available: int, *, what: str) -> None:
    """Raise ``NotEnoughMemory`` (saying what takes the room) when ``est`` exceeds
    ``available`` bytes."""
    if est.total <= available:
        return
    merge = f", converting the merged model {gib(est.merge)}" if est.merge else ""
    raise NotEnoughMemory(
        f"Training {what} needs about {gib(est.total)} of memory at its peak (weights "
        f"{gib(est.weights)}, activations {gib(est.activations)}, adapter and optimizer "
        f"{gib(est.lora)}{merge}), but only {gib(available)} is available. Use a smaller "
        "batch_size or shorter examples, or free memory.",
        param="hyperparameters.batch_size",
    )
