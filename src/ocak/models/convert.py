"""``ocak models convert``: a Hugging Face checkpoint or a GGUF file to a CTranslate2 model.

Stages: inspect (no torch: read the source's header, pick the quantization,
estimate memory), load (transformers; a GGUF is dequantized), convert
(CTranslate2's converter builds the model spec), quantize, write. The model is
written to a hidden temporary folder in the store and renamed into place, so
an interrupted conversion leaves nothing a later run could take for a model; a
second run with the same source and quantization finds the model and does
nothing. The tokenizer and chat template are saved beside ``model.bin`` (the
engine needs only ``tokenizers`` to serve), with ``ocak.json`` recording where
the model came from.

Needs the ``convert`` extra (torch, transformers, gguf, accelerate).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ocak.errors import OcakError
from ocak.models.families import check_family, fix_spec, normalize
from ocak.models.hardware import CudaStatus, available_memory, detect_cuda
from ocak.models.manifest import Manifest, describe_files
from ocak.models.source import SourceInfo, inspect_source, read_json_object
from ocak.models.store import alive, fsync_tree, swap_into_place

QUANTIZATIONS = (
    "int8",
    "int8_float16",
    "int8_float32",
    "int8_bfloat16",
    "float16",
    "bfloat16",
    "float32",
)
STAGES = ("inspect", "load", "convert", "quantize", "write")
METADATA = "ocak.json"
# Files of the tokenizer and chat template that travel with the model.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)
# Resident memory of a process that has imported torch, transformers and CTranslate2.
BASE_OVERHEAD = 768 * 2**20


class ConvertError(OcakError):
    """A conversion that cannot run or failed; the message says why and what to do."""


class NotEnoughMemory(ConvertError):
    def __init__(self, estimate: int, available: int, source: SourceInfo) -> None:
        super().__init__(
            f"converting {source.path.name} needs about {gib(estimate)} of memory at its peak "
            f"({source.n_params / 1e6:.0f}M parameters), but only {gib(available)} is free. "
            "Close other programs, or pass --force to try anyway."
        )
        self.estimate = estimate
        self.available = available


class Progress(Protocol):
    """Receives the stages as they start (the CLI draws them)."""

    def stage(self, name: str, detail: str = "") -> None: ...


class _Silent:
    def stage(self, name: str, detail: str = "") -> None:
        pass


@dataclass(slots=True)
class ConvertResult:
    name: str
    path: Path
    quantization: str
    reason: str
    skipped: bool = False
    estimate: int = 0
    seconds: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)


def gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def choose_quantization(requested: str, cuda: CudaStatus) -> tuple[str, str]:
    """The quantization to write and a sentence saying why (``auto``: int8 CPU, float16 GPU)."""
    if requested != "auto":
        if requested not in QUANTIZATIONS:
            raise ConvertError(
                f"unknown quantization '{requested}': use auto or one of {', '.join(QUANTIZATIONS)}"
            )
        return requested, f"{requested}, as asked"
    if cuda.usable:
        return "float16", f"float16 for the CUDA GPU ({cuda.devices} visible)"
    if cuda.present:
        return "float16", (
            f"float16 for the CUDA GPU ({cuda.devices} visible), though it cannot run yet: "
            f"{cuda.problem}"
        )
    return "int8", "int8, since no CUDA GPU is visible (CPU inference)"


def estimate_peak(source: SourceInfo, quantization: str) -> int:
    """Peak resident memory of the conversion, in bytes (measured, rounded up).

    The checkpoint is loaded in float32 for a GGUF (dequantized) or in its own
    dtype; the converter then holds a float32 copy of every weight while it
    builds the spec, and the quantized copy while it writes.
    """
    loaded = source.n_params * (4 if source.kind == "gguf" else source.bytes_per_param)
    out_bytes = {"float32": 4, "float16": 2, "bfloat16": 2}.get(quantization, 1)
    return BASE_OVERHEAD + loaded + source.n_params * (4 + out_bytes)


def default_name(source: Path, quantization: str) -> str:
    stem = source.name.removesuffix(".gguf") if source.is_file() else source.name
    return f"{stem}-{quantization}"


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


def check_name(name: str) -> str:
    if not _NAME.match(name) or name.endswith(".gguf"):
        raise ConvertError(
            f"'{name}' cannot name a model: use letters, digits, '.', '_', '+' and '-', "
            "starting with a letter or digit"
        )
    return name


def convert(
    source: Path,
    store: Path,
    *,
    name: str | None = None,
    quantization: str = "auto",
    force: bool = False,
    memory_limit: int | None = None,
    progress: Progress | None = None,
    cuda: CudaStatus | None = None,
) -> ConvertResult:
    """Convert ``source`` into ``store/<name>``; see the module docstring."""
    progress = progress or _Silent()
    started = time.monotonic()
    source = source.expanduser().resolve()
    progress.stage("inspect", str(source))
    info = inspect_source(source)
    quant, reason = choose_quantization(quantization, cuda or detect_cuda())
    name = check_name(name or default_name(source, quant))
    target = store / name
    existing = read_metadata(target)
    if existing is not None and not force:
        if existing.get("source") == info.fingerprint() and existing.get("quantization") == quant:
            return ConvertResult(name, target, quant, reason, skipped=True, metadata=existing)
        raise ConvertError(
            f"another model is already stored as '{name}' (from {existing.get('source', {})}, "
            f"{existing.get('quantization')}); pick another --name, or --force to replace it"
        )
    if target.exists() and existing is None and not force:
        raise ConvertError(f"{target} exists and is not a converted model; pick another --name")
    estimate = _check_fits(info, quant, reason, memory_limit, force, progress)
    store.mkdir(parents=True, exist_ok=True)
    remove_stale(store, name)
    with _staging(store, name) as tmp:
        metadata = _convert_into(tmp, info, quant, progress)
        progress.stage("write", f"{target}")
        manifest = Manifest(name=name, kind="chat", engine="ctranslate2", files=describe_files(tmp))
        manifest.write(tmp)
        fsync_tree(tmp)
        swap_into_place(tmp, target)
    return ConvertResult(
        name, target, quant, reason, estimate=estimate,
        seconds=time.monotonic() - started, metadata=metadata,
    )  # fmt: skip


def _check_fits(
    info: SourceInfo,
    quant: str,
    reason: str,
    memory_limit: int | None,
    force: bool,
    progress: Progress,
) -> int:
    """The family is supported and the conversion's peak memory fits; the estimate."""
    check_family(info.model_type)
    estimate = estimate_peak(info, quant)
    free = available_memory()
    budget = min(free, memory_limit) if memory_limit is not None else free
    progress.stage(
        "inspect",
        f"{info.kind} {info.model_type}, {info.n_params / 1e6:.0f}M parameters; quantization "
        f"{reason}; peak memory about {gib(estimate)} of {gib(budget)} free",
    )
    if estimate > budget and not force:
        raise NotEnoughMemory(estimate, budget, info)
    return estimate


def convert_checkpoint(
    source: Path, out: Path, *, quantization: str = "auto", progress: Progress | None = None
) -> dict[str, Any]:
    """Convert the checkpoint folder ``source`` into the empty folder ``out`` (a pull's
    staging folder: the caller puts it in place); its ``ocak.json`` metadata."""
    progress = progress or _Silent()
    info = inspect_source(source)
    quant, reason = choose_quantization(quantization, detect_cuda())
    _check_fits(info, quant, reason, None, False, progress)
    out.mkdir(parents=True, exist_ok=True)
    return _convert_into(out, info, quant, progress)


def read_metadata(folder: Path) -> dict[str, Any] | None:
    """``ocak.json`` of a converted model, or None when ``folder`` holds no model."""
    if not (folder / "model.bin").is_file():
        return None
    return read_json_object(folder / METADATA)


def _tmp_prefix(name: str) -> str:
    return f".{name}.converting-"


def remove_stale(store: Path, name: str) -> None:
    """Delete temporary folders left by conversions whose process is gone (killed)."""
    for entry in store.glob(_tmp_prefix(name) + "*"):
        pid = entry.name.rsplit("-", 1)[-1]
        if pid.isdigit() and alive(int(pid)):
            raise ConvertError(f"'{name}' is being converted by another process (pid {pid})")
        shutil.rmtree(entry, ignore_errors=True)


@contextlib.contextmanager
def _staging(store: Path, name: str) -> Iterator[Path]:
    """A hidden folder in the store, removed unless it was renamed into place."""
    tmp = store / f"{_tmp_prefix(name)}{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _convert_into(out: Path, info: SourceInfo, quant: str, progress: Progress) -> dict[str, Any]:
    """Load, convert, quantize and write the model files into ``out`` (not yet in place)."""
    try:
        import ctranslate2
        import torch
        import transformers
        from transformers.utils import logging as hf_logging
    except ImportError as exc:
        raise ConvertError(
            f"conversion needs the 'convert' extra ({exc.name} is missing): "
            "pip install 'ocak[convert]'"
        ) from exc
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    progress.stage("load", f"{info.kind} checkpoint, {info.n_params / 1e6:.0f}M parameters")
    with torch.no_grad():
        model, tokenizer = _load(info, torch, transformers)
        normalize(model)
        model_type = model.config.model_type
        progress.stage("convert", f"{model_type} to CTranslate2")
        config_dir = out / ".hf-config"
        model.config.save_pretrained(config_dir)
        spec = _converter(config_dir, model, tokenizer)._load()
        fix_spec(spec, model_type, model.config)
        spec.validate()
        progress.stage("quantize", quant)
        spec.optimize(quantization=quant)
        shutil.rmtree(config_dir)
        spec.save(str(out))
        _save_tokenizer(out, info, tokenizer)
        if not (out / "generation_config.json").is_file():
            with contextlib.suppress(Exception):
                model.generation_config.save_pretrained(out)
        context = int(getattr(model.config, "max_position_embeddings", 0) or 0)
        del model, spec
    for extra in out.iterdir():
        if extra.is_file() and extra.name not in TOKENIZER_FILES and extra.name not in (
            "model.bin", "config.json", "vocabulary.json", "vocabulary.txt", METADATA,
        ):  # fmt: skip
            extra.unlink()
    metadata = {
        "format": 1,
        "source": info.fingerprint(),
        "family": model_type,
        "quantization": quant,
        "context_length": context,
        "parameters": info.n_params,
        "ctranslate2": ctranslate2.__version__,
        "transformers": transformers.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out / METADATA).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    return metadata


def _save_tokenizer(out: Path, info: SourceInfo, tokenizer: Any) -> None:
    """The source's own tokenizer files when it has a tokenizer.json, else transformers'."""
    if info.kind == "hf" and (info.path / "tokenizer.json").is_file():
        for name in TOKENIZER_FILES:
            if (info.path / name).is_file():
                shutil.copyfile(info.path / name, out / name)
        return
    tokenizer.save_pretrained(out)


def _load(info: SourceInfo, torch: Any, transformers: Any) -> tuple[Any, Any]:
    auto_model, auto_tok = transformers.AutoModelForCausalLM, transformers.AutoTokenizer
    try:
        if info.kind == "gguf":
            folder, file = str(info.path.parent), info.path.name
            tokenizer = auto_tok.from_pretrained(folder, gguf_file=file)
            model = auto_model.from_pretrained(folder, gguf_file=file, dtype=torch.float32)
        else:
            tokenizer = auto_tok.from_pretrained(str(info.path))
            model = auto_model.from_pretrained(str(info.path), dtype="auto")
    except (ValueError, OSError, KeyError, RuntimeError) as exc:
        hint = (
            " This GGUF can be served as it is with the llama.cpp engine "
            f"(`ocak serve --model {info.path}`)."
            if info.kind == "gguf"
            else ""
        )
        raise ConvertError(f"transformers could not load {info.path}: {exc}.{hint}") from exc
    return model, tokenizer


def _converter(config_dir: Path, model: Any, tokenizer: Any) -> Any:
    """CTranslate2's converter, handed the model and tokenizer already in memory."""
    from ctranslate2.converters import TransformersConverter

    class Preloaded(TransformersConverter):  # type: ignore[misc]
        def load_model(self, model_class: Any, model_name_or_path: str, **kwargs: Any) -> Any:
            return model

        def load_tokenizer(self, tokenizer_class: Any, model_name_or_path: str, **kw: Any) -> Any:
            return tokenizer

    return Preloaded(str(config_dir))
