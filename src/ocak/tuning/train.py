"""``train``: a LoRA adapter for a GGUF base, trained on CPU (or a GPU torch sees), written
as a GGUF LoRA beside its record, put in place whole or not at all.

Order of work: check the data, find the base, tokenize (the tokenizer alone, from the
GGUF), estimate the peak memory and refuse if it does not fit, then load the weights,
train and write. Everything is written into a hidden folder next to ``out_dir``
(``.NAME.tuning-PID``) and renamed into place at the end (``swap_into_place``): a run
that fails, is cancelled or is killed leaves nothing at ``out_dir`` (a killed run's
folder is removed by the next run, as conversions do). With ``spec.ctranslate2`` the
adapter is also merged into the base and converted for CTranslate2, a second folder
(``out_dir`` + ``-ct2``) staged and put in place the same way, before the adapter.

``train`` is a plain module-level function of plain arguments, so a job runner can run
it in another process (``ocak.tuning.worker`` does, printing events as JSON lines);
``should_stop`` is polled before every step, and a stop raises ``Cancelled``.
"""

from __future__ import annotations

import gc
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ocak.engines.chat_template import ChatTemplate
from ocak.errors import OcakError
from ocak.models.hardware import available_memory
from ocak.models.manifest import Manifest, describe_files
from ocak.models.store import StoreBusy, alive, fsync_tree, swap_into_place
from ocak.tuning.base import BaseInfo, fast_gguf_loading, find_base, load_hf, load_tokenizer
from ocak.tuning.data import TrainingData, read_training_file
from ocak.tuning.encode import IGNORE, Encoded, encode
from ocak.tuning.gguf_lora import lora_pairs, write_adapter
from ocak.tuning.memory import Estimate, check_fits, estimate
from ocak.tuning.spec import Resolved, TuneSpec, resolve

ADAPTER_FILE = "adapter.gguf"
RECORD_FILE = "tuning.json"
MERGED_SUFFIX = "-ct2"  # the merged CTranslate2 model's folder: the adapter's name + this
WARMUP = 0.1  # of the steps, at most 10 steps: the learning rate rises linearly


class TuningError(OcakError):
    """A run that cannot go on (the message says why)."""


class Cancelled(OcakError):
    """The run was asked to stop; nothing was written."""

    status = 409
    code = "cancelled"


@dataclass(frozen=True, slots=True)
class TuneEvent:
    """What a run reports: ``started`` (after the memory check), each ``step``, each ``epoch``."""

    kind: Literal["started", "step", "epoch"]
    step: int
    total_steps: int
    epoch: int
    elapsed: float
    loss: float | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        extra = out.pop("data")
        return {"event": out.pop("kind"), **out, **extra}


@dataclass(frozen=True, slots=True)
class TuneResult:
    """A finished run: where the adapter is and what ``tuning.json`` records."""

    out_dir: Path
    adapter: Path
    record: dict[str, Any]


Progress = Callable[[TuneEvent], None]
Stop = Callable[[], bool]


def _peak_rss() -> int:
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if os.uname().sysname == "Darwin" else 1024)


def staging_prefix(out_dir: Path) -> str:
    return f".{out_dir.name}.tuning-"


def remove_stale(out_dir: Path) -> None:
    """Delete the staging folders of runs for ``out_dir`` whose process is gone."""
    for entry in out_dir.parent.glob(staging_prefix(out_dir) + "*"):
        pid = entry.name.rsplit("-", 1)[-1]
        if pid.isdigit() and alive(int(pid)):
            raise StoreBusy(f"{out_dir.name} is being trained by another process (pid {pid})")
        shutil.rmtree(entry, ignore_errors=True)


def _template(base: BaseInfo, tokenizer: Any) -> ChatTemplate:
    return ChatTemplate(
        base.chat_template or getattr(tokenizer, "chat_template", None),
        bos_token=tokenizer.bos_token or "",
        eos_token=tokenizer.eos_token or "",
    )


def _encode_all(
    data: TrainingData, template: ChatTemplate, tokenizer: Any, max_len: int
) -> list[Encoded]:
    def tokenize(text: str, first: bool) -> list[int]:
        return list(tokenizer(text, add_special_tokens=first)["input_ids"])

    bos = tokenizer.bos_token_id
    out = [encode(template, tokenize, e, max_len=max_len, bos=bos) for e in data.examples]
    kept = [e for e in out if e.learnt]
    if not kept:
        raise TuningError(
            f"No example keeps an assistant token within max_seq_len={max_len}: raise it.",
            code="invalid_training_file",
        )
    return kept


def _batch(torch: Any, items: list[Encoded], pad: int) -> dict[str, Any]:
    width = max(len(e.input_ids) for e in items)
    ids = [e.input_ids + [pad] * (width - len(e.input_ids)) for e in items]
    labels = [e.labels + [IGNORE] * (width - len(e.labels)) for e in items]
    mask = [[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in items]
    return {
        "input_ids": torch.tensor(ids),
        "labels": torch.tensor(labels),
        "attention_mask": torch.tensor(mask),
    }


def _batches(items: list[Encoded], size: int, rng: random.Random) -> list[list[Encoded]]:
    order = list(range(len(items)))
    rng.shuffle(order)
    return [[items[i] for i in order[k : k + size]] for k in range(0, len(order), size)]


def _loss_over(
    torch: Any, model: Any, items: list[Encoded], size: int, pad: int, device: str
) -> float:
    """Mean loss per learnt token over ``items`` (validation)."""
    total, count = 0.0, 0
    with torch.no_grad():
        for k in range(0, len(items), size):
            chunk = items[k : k + size]
            batch = {n: t.to(device) for n, t in _batch(torch, chunk, pad).items()}
            n = int((batch["labels"][:, 1:] != IGNORE).sum())
            total += float(model(**batch).loss) * n
            count += n
    return total / max(1, count)


def prepare(spec: TuneSpec) -> tuple[BaseInfo, TrainingData, TrainingData | None, Resolved]:
    """The checks that need no tokenizer: data, base, hyperparameters (fast; a job API can
    run them when the job is created, to refuse it there)."""
    data = read_training_file(Path(spec.training_file))
    valid = read_training_file(Path(spec.validation_file)) if spec.validation_file else None
    base = find_base(spec.base, Path(spec.model_dir) if spec.model_dir else None)
    return base, data, valid, resolve(spec.hyperparameters, len(data.examples))


def train(
    spec: TuneSpec,
    out_dir: Path | str,
    on_progress: Progress | None = None,
    should_stop: Stop | None = None,
) -> TuneResult:
    """Train ``spec`` and put the adapter folder at ``out_dir``; see the module docstring."""
    started = time.monotonic()
    out = Path(out_dir).expanduser().absolute()
    emit = on_progress or (lambda event: None)
    stop = should_stop or (lambda: False)
    base, data, valid, hp = prepare(spec)
    try:
        import peft  # noqa: F401  (imported first: a missing extra is said before any work)
        import torch
    except ImportError as exc:
        raise TuningError(
            f"training needs the 'tune' extra ({exc.name} is missing): pip install 'ocak[tune]'"
        ) from exc
    torch.set_num_threads(spec.thread_count())
    merged = merged_dir(out) if spec.ctranslate2 else None
    with fast_gguf_loading():
        out.parent.mkdir(parents=True, exist_ok=True)
        staged = [_stage(out)] + ([_stage(merged)] if merged else [])
        merge_into = (staged[1], merged.name) if merged else None
        try:
            record = _run(torch, spec, base, data, valid, hp, staged[0], merge_into, emit, stop,
                          started)  # fmt: skip
            if stop():
                raise Cancelled("the tuning run was cancelled; nothing was written")
            for tmp in staged:
                fsync_tree(tmp)
            if merged is not None:
                swap_into_place(staged[1], merged)
            try:
                swap_into_place(staged[0], out)
            except BaseException:
                if merged is not None:
                    shutil.rmtree(merged, ignore_errors=True)
                raise
        finally:
            for tmp in staged:
                shutil.rmtree(tmp, ignore_errors=True)
    return TuneResult(out, out / ADAPTER_FILE, record)


def merged_dir(out_dir: Path) -> Path:
    """Where the merged CTranslate2 model of the adapter at ``out_dir`` goes."""
    return out_dir.with_name(out_dir.name + MERGED_SUFFIX)


def _stage(target: Path) -> Path:
    """An empty hidden folder beside ``target`` for this process (stale ones removed)."""
    remove_stale(target)
    tmp = target.parent / f"{staging_prefix(target)}{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def _run(
    torch: Any,
    spec: TuneSpec,
    base: BaseInfo,
    data: TrainingData,
    valid: TrainingData | None,
    hp: Resolved,
    tmp: Path,
    merge_into: tuple[Path, str] | None,
    emit: Progress,
    stop: Stop,
    started: float,
) -> dict[str, Any]:
    def check_stop() -> None:
        if stop():
            raise Cancelled("the tuning run was cancelled; nothing was written")

    tokenizer = load_tokenizer(base)
    template = _template(base, tokenizer)
    max_len = min(spec.max_seq_len, base.context)
    train_items = _encode_all(data, template, tokenizer, max_len)
    valid_items = _encode_all(valid, template, tokenizer, max_len) if valid else []
    longest = max(len(e.input_ids) for e in train_items + valid_items)
    lora = spec.lora
    est = estimate(base, batch=hp.batch_size, seq_len=longest, rank=lora.rank,
                   targets=lora.targets, merge=merge_into is not None)  # fmt: skip
    budget = available_memory()
    if spec.memory_limit is not None:
        budget = min(budget, spec.memory_limit)
    check_fits(est, budget, what=f"'{base.name}'")
    steps_per_epoch = math.ceil(len(train_items) / hp.batch_size)
    total = steps_per_epoch * hp.n_epochs
    if spec.max_steps is not None:
        total = min(total, spec.max_steps)
    epochs = math.ceil(total / steps_per_epoch)
    emit(TuneEvent("started", 0, total, 0, time.monotonic() - started, data={
        "examples": len(train_items),
        "truncated": sum(e.truncated for e in train_items),
        "longest": longest,
        "hyperparameters": hp.as_dict(),
        "estimate": est.as_dict(),
        "available_memory": budget,
    }))  # fmt: skip
    check_stop()

    torch.manual_seed(spec.seed)
    model = load_hf(base, torch)
    check_stop()
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,  # type: ignore[arg-type]  # peft reads it as a number
        lora_dropout=lora.dropout,
        target_modules=list(lora.targets),
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        model = get_peft_model(model, config)
    except ValueError as exc:  # targets the model does not have
        raise TuningError(
            f"LoRA targets {list(lora.targets)}: {exc}", param="lora.targets"
        ) from exc
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=hp.learning_rate, weight_decay=0.0)
    warmup = max(1, min(10, round(WARMUP * total)))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rng = random.Random(spec.seed)
    step, tokens, losses, epoch_records = 0, 0, [], []
    checkpoints: list[str] = []
    for epoch in range(1, epochs + 1):
        epoch_losses = []
        for chunk in _batches(train_items, hp.batch_size, rng):
            check_stop()
            batch = {n: t.to(device) for n, t in _batch(torch, chunk, pad).items()}
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens += sum(len(e.input_ids) for e in chunk)
            value = float(loss.detach())
            losses.append(value)
            epoch_losses.append(value)
            extra = {"learning_rate": schedule.get_last_lr()[0], "tokens": tokens}
            emit(TuneEvent("step", step, total, epoch, time.monotonic() - started, value, extra))
            if step >= total:
                break
        model.eval()
        valid_loss = None
        if valid_items:
            valid_loss = _loss_over(torch, model, valid_items, hp.batch_size, pad, device)
        model.train()
        saved = None
        if spec.checkpoints and epoch < epochs:
            saved = f"checkpoints/epoch-{epoch}.gguf"
            (tmp / "checkpoints").mkdir(exist_ok=True)
            _write(model, base, spec, tmp / saved, step)
            checkpoints.append(saved)
        train_loss = sum(epoch_losses) / max(1, len(epoch_losses))
        epoch_records.append({"epoch": epoch, "step": step, "train_loss": train_loss,
                              "valid_loss": valid_loss, "checkpoint": saved})  # fmt: skip
        emit(TuneEvent("epoch", step, total, epoch, time.monotonic() - started, train_loss,
                       {"valid_loss": valid_loss, "checkpoint": saved}))  # fmt: skip
    check_stop()
    _write(model, base, spec, tmp / ADAPTER_FILE, step)
    record = _record(spec, base, hp, est, step, tokens, losses, epoch_records, checkpoints)
    record["examples"] = len(train_items)
    record["truncated"] = sum(e.truncated for e in train_items)
    if merge_into is not None:
        check_stop()
        del optimizer, schedule, params  # the training state goes before the converter's
        gc.collect()
        record["ctranslate2"] = _merge_for_ctranslate2(model, tokenizer, *merge_into)
    record["seconds"] = round(time.monotonic() - started, 2)
    record["peak_rss"] = _peak_rss()
    (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    if spec.name:
        manifest = Manifest(name=spec.name, kind="adapter", engine="llama.cpp",
                            entry=ADAPTER_FILE, base=spec.base_name or base.name,
                            files=describe_files(tmp))  # fmt: skip
        manifest.write(tmp)
    return record


def _merge_for_ctranslate2(model: Any, tokenizer: Any, out: Path, name: str) -> dict[str, Any]:
    """Merge the LoRA into the base weights (peft's ``merge_and_unload``: the adapter is
    written already), save that as a transformers checkpoint and convert it with ocak's
    converter into ``out`` (a staging folder) as the store's model ``name``; its record."""
    from ocak.models.convert import ConvertError, convert_checkpoint

    checkpoint = out / ".merged-hf"
    merged = model.merge_and_unload()
    merged.save_pretrained(checkpoint, safe_serialization=True)
    tokenizer.save_pretrained(checkpoint)
    try:
        metadata = convert_checkpoint(checkpoint, out)
    except ConvertError as exc:
        raise TuningError(f"the merged model could not be converted: {exc}") from exc
    finally:
        shutil.rmtree(checkpoint, ignore_errors=True)
    Manifest(name=name, kind="chat", engine="ctranslate2", files=describe_files(out)).write(out)
    return {"name": name, "quantization": metadata["quantization"]}


def _write(model: Any, base: BaseInfo, spec: TuneSpec, path: Path, step: int) -> None:
    write_adapter(
        path,
        lora_pairs(model),
        arch=base.arch,
        n_layers=base.layers,
        alpha=spec.lora.alpha,
        heads=base.heads,
        kv_heads=base.kv_heads,
        permute_qk=base.permute_qk,
        metadata={"general.name": spec.name or f"{base.name} LoRA", "ocak.tuning.step": str(step)},
    )


def _record(
    spec: TuneSpec,
    base: BaseInfo,
    hp: Resolved,
    est: Estimate,
    steps: int,
    tokens: int,
    losses: list[float],
    epochs: list[dict[str, Any]],
    checkpoints: list[str],
) -> dict[str, Any]:
    return {
        "format": 1,
        "name": spec.name,
        "base": {"name": base.name, "path": str(base.path), "arch": base.arch},
        "adapter": ADAPTER_FILE,
        "hyperparameters": hp.as_dict(),
        "lora": spec.lora.model_dump(mode="json"),
        "seed": spec.seed,
        "steps": steps,
        "trained_tokens": tokens,
        "train_loss": losses[-1] if losses else None,
        "epochs": epochs,
        "checkpoints": checkpoints,
        "estimate": est.as_dict(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
