"""LoRA adapters on llama.cpp: loaded once per model, applied per decode call.

llama.cpp applies adapters to a whole context (``llama_set_adapters_lora``), not per
sequence, so the scheduler decodes the sequences of each adapter set in a call of
its own (see ``scheduler.py``). A ``LoraSet`` is one such set: the adapters and
their scales, with a ``key`` that also keys the KV cells they computed, so cells
are never shared between requests with different adapters or scales.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp as C

from ocak.engines.llamacpp.model import LlamaModel
from ocak.errors import EngineError, InvalidRequest
from ocak.protocol.generation import Adapter

log = logging.getLogger("ocak.llamacpp")

LoraKey = tuple[tuple[str, float], ...]  # ((adapter file, scale), ...); () is the bare model


@dataclass(frozen=True, eq=False)
class LoraSet:
    """Adapters with their scales, as ``llama_set_adapters_lora`` takes them."""

    key: LoraKey
    pointers: ctypes.Array[Any] | None = field(repr=False)
    scales: ctypes.Array[ctypes.c_float] | None = field(repr=False)

    def apply(self, ctx: ctypes.c_void_p) -> None:
        """Set these adapters on ``ctx`` (none: the bare model)."""
        rc = C.llama_set_adapters_lora(ctx, self.pointers, len(self.key), self.scales)
        if rc != 0:
            raise EngineError(f"llama.cpp could not apply the LoRA adapters ({rc})")


NONE = LoraSet((), None, None)


class AdapterCache:
    """A model's adapters, each loaded from its file the first time a request names it.

    An adapter file replaced in the store (same name, new contents) is loaded again;
    the old one stays in memory until the model is unloaded (llama.cpp frees a model's
    adapters with the model).
    """

    def __init__(self, model: LlamaModel) -> None:
        self.model = model
        self._loaded: dict[tuple[str, int, int], Any] = {}  # (path, mtime, size) -> adapter
        self._lock = threading.Lock()

    def lora_set(self, adapters: tuple[Adapter, ...]) -> LoraSet:
        """The set for ``adapters``, loading the ones not loaded yet (blocking: stats each
        file, may read one; call from a worker thread)."""
        if not adapters:
            return NONE
        pointers = [self._pointer(a) for a in adapters]
        key = tuple((str(a.path), float(a.scale)) for a in adapters)
        return LoraSet(
            key,
            (C.llama_adapter_lora_p_ctypes * len(pointers))(*pointers),
            (ctypes.c_float * len(adapters))(*(a.scale for a in adapters)),
        )

    @staticmethod
    def _file_key(adapter: Adapter) -> tuple[str, int, int]:
        if adapter.path is None:  # pragma: no cover - serving fills every path
            raise EngineError(f"the adapter '{adapter.name}' has no file")
        try:
            st = Path(adapter.path).stat()
        except OSError:
            raise InvalidRequest(
                f"The file of the LoRA adapter '{adapter.name}' is gone ({adapter.path}).",
                param="adapters",
            ) from None
        return adapter.path, st.st_mtime_ns, st.st_size

    def _pointer(self, adapter: Adapter) -> Any:
        key = self._file_key(adapter)
        with self._lock:
            found = self._loaded.get(key)
            if found is not None:
                return found
            ptr = C.llama_adapter_lora_init(self.model.ptr, key[0].encode())
            if not ptr:
                raise InvalidRequest(
                    f"The LoRA adapter '{adapter.name}' does not fit the model "
                    f"{self.model.path.name}: llama.cpp could not apply it (another "
                    "architecture, other tensor shapes, or not a GGUF LoRA adapter).",
                    param="adapters",
                )
            self._loaded[key] = ptr
            log.info("%s: LoRA adapter '%s' loaded", self.model.path.name, adapter.name)
            return ptr
