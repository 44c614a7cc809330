"""The base model of a tuning run: found, checked trainable, and loaded in its Hugging Face form.

The adapter is served by llama.cpp, which reads GGUF files, so the base must be a GGUF
model (the default, a stored GGUF, a path). It is trained in its Hugging Face form: the
GGUF dequantized by transformers to float32 (as ``ocak models convert`` does), then
rebuilt as a plain model (``from_config`` + ``load_state_dict``) so that nothing of the
GGUF loader's quantization config is left for peft to take for a quantized model.

Only architectures whose GGUF tensor layout ocak maps back are trained
(``ARCHITECTURES``): for each, whether llama.cpp's converter permuted the query and key
rows (llama does, for its RoPE layout), which the adapter's B matrices must then follow.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ocak.errors import OcakError
from ocak.models.gguf_header import Value, _read, _string, _value
from ocak.models.store import ModelSpec, resolve


class UnsupportedBase(OcakError):
    """A base model this machine cannot train an adapter for."""

    status = 400
    type = "invalid_request_error"
    code = "unsupported_model"


# GGUF architecture -> does llama.cpp's converter permute attn_q / attn_k rows?
ARCHITECTURES: dict[str, bool] = {
    "llama": True,
    "qwen2": False,
    "qwen3": False,
    "gemma3": False,
}


@dataclass(frozen=True, slots=True)
class BaseInfo:
    """What the run needs to know of the base before loading it (from the GGUF header)."""

    name: str
    path: Path
    arch: str
    n_params: int
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    context: int
    chat_template: str | None

    @property
    def permute_qk(self) -> bool:
        return ARCHITECTURES[self.arch]


def _int(meta: dict[str, Value], key: str, default: int = 0) -> int:
    value = meta.get(key)
    return (
        int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default
    )


def read_header(path: Path) -> tuple[dict[str, Value], int]:
    """A GGUF's metadata (big arrays skipped) and its number of parameters, from the header
    alone (``gguf.GGUFReader`` takes seconds to parse the vocabulary; this does not)."""
    from ocak.models.store import ModelFileError

    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise ModelFileError(f"{path} is not a GGUF file")
        (version,) = _read(f, "I")
        count = "I" if version == 1 else "Q"
        n_tensors, n_kv = (int(n) for n in _read(f, count * 2))
        meta: dict[str, Value] = {}
        for _ in range(n_kv):
            key = _string(f)
            (kind,) = _read(f, "I")
            meta[key] = _value(f, int(kind))
        total = 0
        for _ in range(n_tensors):
            _string(f)
            (n_dims,) = _read(f, "I")
            size = 1
            for dim in _read(f, count * int(n_dims)):
                size *= int(dim)
            _read(f, "IQ")  # type, offset
            total += size
    return meta, total


def find_base(spec: str, model_dir: Path | None) -> BaseInfo:
    """The base named ``spec``; ``ModelNotFound`` when unknown, ``UnsupportedBase`` when it
    cannot be trained here (a CTranslate2 model, an embedder, an architecture ocak does not
    map back from GGUF)."""
    found: ModelSpec = resolve(spec, model_dir)
    if found.engine == "ctranslate2":
        raise UnsupportedBase(
            f"'{spec}' is a CTranslate2 model: it keeps no Hugging Face form to train, and "
            "adapters are served by llama.cpp. Train its GGUF source instead.",
            param="model",
        )
    if found.kind != "chat":
        raise UnsupportedBase(f"'{spec}' is a {found.kind} model, not a chat model", param="model")
    path = found.path
    if not path.is_file():
        raise UnsupportedBase(
            f"'{spec}' is not a GGUF file; adapters are trained for GGUF bases", param="model"
        )
    try:
        meta, n_params = read_header(path)
    except OcakError as exc:
        raise UnsupportedBase(f"'{spec}' cannot be read: {exc}", param="model") from None
    arch = str(meta.get("general.architecture") or "")
    if arch not in ARCHITECTURES:
        raise UnsupportedBase(
            f"'{spec}' is a '{arch or 'unknown'}' model; ocak trains adapters for "
            f"{', '.join(sorted(ARCHITECTURES))} models only",
            param="model",
        )
    if meta.get("general.type") == "adapter":
        raise UnsupportedBase(f"'{spec}' is an adapter, not a base model", param="model")
    heads = _int(meta, f"{arch}.attention.head_count")
    template = meta.get("tokenizer.chat_template")
    return BaseInfo(
        name=found.id,
        path=path,
        arch=arch,
        n_params=n_params,
        layers=_int(meta, f"{arch}.block_count"),
        hidden=_int(meta, f"{arch}.embedding_length"),
        intermediate=_int(meta, f"{arch}.feed_forward_length"),
        heads=heads,
        kv_heads=_int(meta, f"{arch}.attention.head_count_kv", heads),
        vocab=_int(meta, f"{arch}.vocab_size", 32000),
        context=_int(meta, f"{arch}.context_length", 2048),
        chat_template=template if isinstance(template, str) else None,
    )


@contextlib.contextmanager
def fast_gguf_loading() -> Iterator[None]:
    """Within this block, transformers' GGUF loader parses each file once and builds
    ``gguf``'s tensor name map once: it otherwise parses the file again for the config,
    the tokenizer and the weights, and builds the map once per tensor (about 10 of the
    15 seconds of loading the default model on 2 cores). Both are looked up on the
    ``gguf`` module when called, so they are swapped there and put back after."""
    import gguf

    real_reader, real_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict[tuple[str, str], Any] = {}

    def reader(path: Any, mode: Any = "r") -> Any:
        key = (str(path), str(mode))
        if key not in readers:
            readers[key] = real_reader(path, mode)
        return readers[key]

    module: Any = gguf
    module.GGUFReader = reader
    module.get_tensor_name_map = functools.cache(real_map)
    try:
        yield
    finally:
        module.GGUFReader, module.get_tensor_name_map = real_reader, real_map
        readers.clear()


def load_tokenizer(base: BaseInfo) -> Any:
    """The base's tokenizer, as transformers builds it from the GGUF."""
    import transformers
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(base.path.parent), gguf_file=base.path.name
        )
    except (ValueError, OSError, KeyError, RuntimeError, NotImplementedError) as exc:
        raise UnsupportedBase(
            f"transformers could not read the tokenizer of {base.path.name}: {exc}",
            param="model",
        ) from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_hf(base: BaseInfo, torch: Any) -> Any:
    """The base as a plain float32 transformers model (dequantized from the GGUF)."""
    import transformers

    folder, file = str(base.path.parent), base.path.name
    auto = transformers.AutoModelForCausalLM
    try:
        loaded = auto.from_pretrained(folder, gguf_file=file, dtype=torch.float32)
    except (ValueError, OSError, KeyError, RuntimeError, NotImplementedError) as exc:
        raise UnsupportedBase(
            f"transformers could not load {base.path.name} to train it: {exc}", param="model"
        ) from exc
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    state = loaded.state_dict()
    del loaded
    model = auto.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    missing, unexpected = model.load_state_dict(state, strict=False)
    del state
    model.tie_weights()
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise UnsupportedBase(
            f"{base.path.name} did not load whole: missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}",
            param="model",
        )
    return model
