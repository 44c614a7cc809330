"""A GGUF model loaded through llama.cpp's C API: weights, vocabulary, chat template.

Read-only after loading, so tokenizing and detokenizing may happen on any
thread. llama.cpp's own log goes through Python logging (warnings and errors).
"""

from __future__ import annotations

import ctypes
import logging
import threading
from pathlib import Path
from typing import Any

import llama_cpp as C

from ocak.engines.chat_template import ChatTemplate
from ocak.engines.text import check_ids
from ocak.errors import EngineError
from ocak.models.store import ModelFileError
from ocak.system.cpu import read_cpu
from ocak.system.llama_build import assess, guard_message, loaded_system_info

log = logging.getLogger("ocak.llamacpp.native")

_backend_lock = threading.Lock()
_backend_ready = False
_extra_bufts: bool | None = None  # decided once per process by extra_buffers_allowed()


def _log(level: int, text: bytes, _user: Any) -> None:  # pragma: no cover - C callback
    if level in (3, 4):  # GGML_LOG_LEVEL_WARN, GGML_LOG_LEVEL_ERROR
        message = text.decode("utf-8", "replace").rstrip()
        if message:
            log.log(logging.WARNING if level == 3 else logging.ERROR, "llama.cpp: %s", message)


_log_callback = C.llama_log_callback(_log)  # kept alive for the process


def init_backend() -> None:
    """Initialise llama.cpp once per process and route its log to Python logging."""
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            C.llama_log_set(_log_callback, ctypes.c_void_p(0))
            C.llama_backend_init()
            _backend_ready = True


def extra_buffers_allowed() -> bool:
    """False when this llama.cpp's AMX kernels could be reached (they crash): the guard.

    Decided once per process, from the loaded library's system info and the CPU's
    flags, and said in one warning line when it turns them off.
    """
    global _extra_bufts
    with _backend_lock:
        if _extra_bufts is None:
            verdict = assess(loaded_system_info(), read_cpu())
            _extra_bufts = not verdict.amx_guard
            if verdict.amx_guard:
                logging.getLogger("ocak.llamacpp").warning("%s", guard_message(verdict))
        return _extra_bufts


def check_gguf(path: Path) -> None:
    """Fail early, with a message naming the file, for paths that are not GGUF models."""
    if not path.exists():
        raise ModelFileError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder, not a GGUF file")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ModelFileError(f"{path} is not a GGUF file (it does not start with 'GGUF')")


class LlamaModel:
    """Weights and vocabulary of one GGUF file."""

    def __init__(self, path: Path, *, gpu_layers: int = 0) -> None:
        check_gguf(path)
        init_backend()
        params = C.llama_model_default_params()
        params.n_gpu_layers = gpu_layers
        params.use_extra_bufts = extra_buffers_allowed()
        self.path = path
        self.ptr = C.llama_model_load_from_file(str(path).encode(), params)
        if not self.ptr:
            raise ModelFileError(
                f"llama.cpp could not load {path}: the file is damaged, truncated, or uses "
                "a format this llama.cpp build does not know"
            )
        self.vocab = C.llama_model_get_vocab(self.ptr)
        self._eog: dict[int, bool] = {}
        self.n_vocab = C.llama_vocab_n_tokens(self.vocab)
        self.n_ctx_train = C.llama_model_n_ctx_train(self.ptr)
        self.size_bytes = path.stat().st_size
        self.bos = C.llama_vocab_bos(self.vocab)
        self.eos = C.llama_vocab_eos(self.vocab)
        self.add_bos = bool(C.llama_vocab_get_add_bos(self.vocab))
        self._piece_cache: dict[int, bytes] = {}
        template = C.llama_model_chat_template(self.ptr, None)
        self.chat_template = ChatTemplate(
            template.decode("utf-8") if template else None,
            bos_token=self.token_text(self.bos) if self.bos >= 0 else "",
            eos_token=self.token_text(self.eos) if self.eos >= 0 else "",
        )
        self.description = self._desc()
        # llama.cpp describes a model as "<arch> <size> <type>", e.g. "llama 256M Q4_1".
        self.quantization = self.description.rsplit(" ", 1)[-1] or None

    @property
    def start_token(self) -> int | None:
        """The token an empty prompt starts with (BOS), or None."""
        return self.bos if self.bos >= 0 else None

    def _desc(self) -> str:
        buf = ctypes.create_string_buffer(256)
        n = C.llama_model_desc(self.ptr, buf, len(buf))
        return buf.raw[: max(n, 0)].decode("utf-8", "replace")

    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(1024)
        n = C.llama_model_meta_val_str(self.ptr, key.encode(), buf, len(buf))
        if n < 0:
            return None
        return buf.raw[: min(n, len(buf))].decode("utf-8", "replace")

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        """Tokens of ``text``; special tokens written in the text are parsed as such."""
        data = text.encode("utf-8")
        add = add_special and self.add_bos
        if add and self.chat_template.bos_token and text.startswith(self.chat_template.bos_token):
            add = False  # the template already wrote the BOS token
        cap = len(data) + 8
        buf = (C.llama_token * cap)()
        n = C.llama_tokenize(self.vocab, data, len(data), buf, cap, add, True)
        if n < 0:
            cap = -n
            buf = (C.llama_token * cap)()
            n = C.llama_tokenize(self.vocab, data, len(data), buf, cap, add, True)
        if n < 0:
            raise EngineError("llama.cpp failed to tokenize the prompt")
        return list(buf[:n])

    def detokenize(self, ids: list[int]) -> str:
        """The text of ``ids``, special tokens written out; 400 for an id past the vocabulary
        (llama.cpp would read out of bounds)."""
        check_ids(ids, C.llama_vocab_n_tokens(self.vocab))
        if not ids:
            return ""
        tokens = (C.llama_token * len(ids))(*ids)
        cap = len(ids) * 16 + 16
        buf = ctypes.create_string_buffer(cap)
        n = C.llama_detokenize(self.vocab, tokens, len(ids), buf, cap, False, True)
        if n < 0:
            cap = -n
            buf = ctypes.create_string_buffer(cap)
            n = C.llama_detokenize(self.vocab, tokens, len(ids), buf, cap, False, True)
        if n < 0:
            raise EngineError("llama.cpp failed to detokenize")
        return buf.raw[:n].decode("utf-8", "replace")

    def piece(self, token: int) -> bytes:
        """The bytes a generated token adds to the text (control tokens add nothing)."""
        cached = self._piece_cache.get(token)
        if cached is not None:
            return cached
        buf = ctypes.create_string_buffer(64)
        n = C.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = C.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        out = buf.raw[:n]
        self._piece_cache[token] = out
        return out

    def token_text(self, token: int) -> str:
        buf = ctypes.create_string_buffer(128)
        n = C.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, True)
        return buf.raw[: max(n, 0)].decode("utf-8", "replace")

    def is_eog(self, token: int) -> bool:
        """End of generation (and of a chat turn): ``<|im_end|>``, ``<|eot_id|>``, EOS."""
        known = self._eog.get(token)
        if known is None:
            known = self._eog[token] = bool(C.llama_vocab_is_eog(self.vocab, token))
        return known

    def close(self) -> None:
        if self.ptr:
            C.llama_model_free(self.ptr)
            self.ptr = None
