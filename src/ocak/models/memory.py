"""What a model takes in memory once loaded, estimated from its files before loading:
the weights (their size on disk) and, for a GGUF, the KV cache for ``parallel`` sequences
of ``ctx_size`` tokens (16-bit keys and values). ``ocak doctor`` and the on-demand loader
use the same figures."""

from __future__ import annotations

from dataclasses import dataclass

from ocak.errors import OcakError
from ocak.models.gguf_header import kv_shape, read_metadata
from ocak.models.store import ModelSpec, disk_size


@dataclass(frozen=True, slots=True)
class MemoryEstimate:
    weights: int
    cache: int

    @property
    def total(self) -> int:
        return self.weights + self.cache


def estimate(spec: ModelSpec, *, ctx_size: int, parallel: int) -> MemoryEstimate:
    weights = disk_size(spec.path) if spec.path.exists() else 0
    cache = 0
    if spec.engine == "llama.cpp":
        try:
            shape = kv_shape(read_metadata(spec.path).get)
        except (OcakError, OSError):
            shape = None
        if shape is not None:
            cache = shape.bytes_for(parallel * ctx_size)
    return MemoryEstimate(weights, cache)
