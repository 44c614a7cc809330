"""Where mixing adapters' time goes: one ``llama_decode`` call's cost by batch size, with
consecutive and with gapped sequence ids, without and with a LoRA adapter set on the
context (the bundled model, 2 threads, 8 sequences of non-unified KV cache).

``python -m bench.lora_calls`` prints milliseconds per call; BENCHMARKS.md quotes it
beside ``bench/adapters.py``.
"""

from __future__ import annotations

import ctypes
import sys
import tempfile
import time
from pathlib import Path

import llama_cpp as C

from bench.common import ROOT


def main() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from lora_files import random_lora  # the tests' writer
    from ocak.engines.llamacpp.model import LlamaModel
    from ocak.models.store import default_model_path

    model = LlamaModel(default_model_path())
    lora = random_lora(default_model_path(), Path(tempfile.mkdtemp()) / "lora.gguf")
    adapter = C.llama_adapter_lora_init(model.ptr, str(lora).encode())
    params = C.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch, params.n_seq_max = 8 * 512, 512, 512, 8
    params.n_threads = params.n_threads_batch = 2
    params.kv_unified = False
    ctx = C.llama_init_from_model(model.ptr, params)
    batch = C.llama_batch_init(512, 0, 1)
    positions: dict[int, int] = {}

    def decode(seqs: list[int]) -> None:
        for i, s in enumerate(seqs):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = 100 + i, positions.get(s, 0), 1
            batch.seq_id[i][0], batch.logits[i] = s, True
            positions[s] = positions.get(s, 0) + 1
        batch.n_tokens = len(seqs)
        if C.llama_decode(ctx, batch) != 0:
            raise SystemExit("llama_decode failed")

    adapters = (C.llama_adapter_lora_p_ctypes * 1)(adapter)
    scales = (ctypes.c_float * 1)(1.0)
    for with_lora in (False, True):
        if with_lora:
            C.llama_set_adapters_lora(ctx, adapters, 1, scales)
        else:
            C.llama_set_adapters_lora(ctx, None, 0, None)
        for seqs in ([0], [0, 1], [0, 1, 2, 3], list(range(8)), [0, 2], [0, 2, 4, 6]):
            decode(seqs)
            start, n = time.perf_counter(), 20
            for _ in range(n):
                decode(seqs)
            ms = (time.perf_counter() - start) / n * 1000
            print(f"adapter={with_lora!s:5} seqs={seqs}: {ms:.1f} ms/call")


if __name__ == "__main__":
    main()
