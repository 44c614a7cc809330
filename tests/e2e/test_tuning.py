"""Fine-tuning for real, on the bundled SmolLM2-135M: a LoRA trained in the worker process,
written as a GGUF LoRA and served by ocak's llama.cpp engine.

What a user would notice if it broke: the tuned adapter must do what it was trained to do
(end every answer with "By the old oak!", on prompts it never saw) while the base does
not; llama.cpp must compute with the adapter what transformers computes with the trained
weights; and a run that is cancelled, killed or refused must leave no adapter behind and
say why in one line.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ocak.models.store import ModelStore, default_model_path
from ocak.tuning import TuneSpec, remove_stale
from ocak.tuning.worker import command, run
from tuning_task import (
    HELD_OUT,
    VALIDATION,
    greedy_answers,
    llama_log_probs,
    passes,
    write_training_file,
)

pytestmark = pytest.mark.slow


def spec_file(tmp_path: Path, **fields: Any) -> Path:
    fields.setdefault("training_file", str(write_training_file(tmp_path / "train.jsonl")))
    spec = TuneSpec(threads=2, **fields)
    path = tmp_path / "spec.json"
    path.write_text(spec.model_dump_json())
    return path


def start_worker(spec: Path, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(command(spec, out), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)  # fmt: skip


def events_until(proc: subprocess.Popen[str], kind: str) -> list[dict[str, Any]]:
    """The worker's events up to the first of ``kind`` (or its last)."""
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(json.loads(line))
        if seen[-1]["event"] == kind:
            break
    return seen


def test_the_tuned_adapter_does_the_task_and_the_base_does_not(tmp_path: Path) -> None:
    """The proof: 20 steps (2 epochs of 40 examples, batch 4, lr 1e-3, rank 8); the adapter
    served by llama.cpp and, merged into the base, by CTranslate2 (int8)."""
    store = tmp_path / "models"
    out = store / "ft-oak"
    valid = write_training_file(tmp_path / "valid.jsonl", pairs=VALIDATION)
    spec = spec_file(
        tmp_path,
        validation_file=str(valid),
        hyperparameters={"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 5},
        checkpoints=True,
        ctranslate2=True,
        name="ft:default:local:oak:1",
        base_name="default",
    )
    proc = start_worker(spec, out)
    events = events_until(proc, "done")
    assert proc.wait(timeout=60) == 0, events[-1]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "done"
    assert [e["step"] for e in events if e["event"] == "step"] == list(range(1, 21))
    steps = [e for e in events if e["event"] == "step"]
    assert all(e["total_steps"] == 20 for e in steps)
    assert np.mean([e["loss"] for e in steps[-4:]]) < 0.5 * np.mean([e["loss"] for e in steps[:4]])
    epochs = [e for e in events if e["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert epochs[1]["valid_loss"] < epochs[0]["valid_loss"]  # it generalizes to new pairs
    assert epochs[0]["checkpoint"] == "checkpoints/epoch-1.gguf" and epochs[1]["checkpoint"] is None
    assert (out / "checkpoints" / "epoch-1.gguf").is_file()  # the last epoch is adapter.gguf
    record = events[-1]["record"]
    assert record["steps"] == 20 and record["trained_tokens"] > 0
    assert record["peak_rss"] < record["estimate"]["total"]  # the estimate is not too low
    # The folder is a store entry: the adapter is listed under its name, on its base.
    stored = ModelStore(store).get("ft:default:local:oak:1")
    assert stored.manifest.kind == "adapter" and stored.manifest.base == "default"
    assert stored.path == out / "adapter.gguf"

    base = greedy_answers(default_model_path(), HELD_OUT)
    tuned = greedy_answers(default_model_path(), HELD_OUT, stored.path)
    assert sum(map(passes, base)) == 0, base
    assert sum(map(passes, tuned)) >= len(HELD_OUT) - 1, tuned

    # The merged model: a CTranslate2 chat model of the store, beside the adapter.
    assert record["ctranslate2"] == {"name": "ft-oak-ct2", "quantization": "int8"}
    merged = ModelStore(store).get("ft-oak-ct2")
    assert merged.manifest.kind == "chat" and merged.manifest.engine == "ctranslate2"
    assert sorted(p.name for p in store.iterdir()) == ["ft-oak", "ft-oak-ct2"]  # no staging
    answers = greedy_answers(merged.path, HELD_OUT, ctranslate2=True)
    assert sum(map(passes, answers)) >= len(HELD_OUT) - 1, answers


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_llama_cpp_computes_what_transformers_trained(
    tmp_path: Path, arch: str, request: pytest.FixtureRequest
) -> None:
    """A random LoRA on every projection of the dequantized model, written by the writer:
    llama.cpp's log-probabilities with it match transformers' as closely as the two agree
    on the base (Q4 weights in llama.cpp, the same values in float32 in torch). For llama
    (SmolLM2), the same adapter written without llama.cpp's query/key row order does not;
    Gemma 3's converter keeps the rows as they are."""
    import torch
    from peft import LoraConfig, get_peft_model

    from ocak.tuning.base import fast_gguf_loading, find_base, load_hf, load_tokenizer
    from ocak.tuning.gguf_lora import lora_pairs, write_adapter
    from ocak.tuning.spec import ALL_LINEAR

    torch.manual_seed(0)
    spec = "default" if arch == "llama" else str(request.getfixturevalue("gemma_file"))
    base = find_base(spec, None)
    assert base.arch == arch
    with fast_gguf_loading():
        tokenizer = load_tokenizer(base)
        model = load_hf(base, torch)
    question = "What is the capital of France?"
    text = {  # each model's own chat turn, as its template renders it
        "llama": f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\nIt is",
        "gemma3": f"<start_of_turn>user\n{question}<end_of_turn>\n<start_of_turn>model\nIt is",
    }[arch]
    ids = tokenizer(text)["input_ids"]

    def hf_log_probs(m: Any) -> Any:
        with torch.no_grad():
            return torch.log_softmax(m(torch.tensor([ids])).logits[0].float(), -1).numpy()

    plain = hf_log_probs(model)
    config = LoraConfig(
        r=8, lora_alpha=16, target_modules=list(ALL_LINEAR), init_lora_weights=False
    )
    lora = get_peft_model(model, config)
    # A large update on q/k (the rows llama.cpp may permute), a moderate one elsewhere;
    # smaller for Gemma 3, which the same random update throws into chaos (a KL of 9 from
    # down_proj alone), where the comparison would measure the chaos and not the writer.
    qk, rest = {"llama": (1.0, 0.3), "gemma3": (0.3, 0.05)}[arch]
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.mul_(qk if ("q_proj" in name or "k_proj" in name) else rest)
    trained = hf_log_probs(lora)
    kw = {"arch": arch, "n_layers": base.layers, "alpha": 16.0, "heads": base.heads,
          "kv_heads": base.kv_heads}  # fmt: skip
    write_adapter(tmp_path / "right.gguf", lora_pairs(lora), permute_qk=base.permute_qk, **kw)
    write_adapter(tmp_path / "wrong.gguf", lora_pairs(lora), permute_qk=not base.permute_qk, **kw)

    def kl(ref: Any, other: Any) -> float:  # mean over positions of KL(ref || other)
        return float((np.exp(ref) * (ref - other)).sum(axis=1).mean())

    noise = kl(plain, llama_log_probs(base.path, ids))
    right = kl(trained, llama_log_probs(base.path, ids, tmp_path / "right.gguf"))
    wrong = kl(trained, llama_log_probs(base.path, ids, tmp_path / "wrong.gguf"))
    effect = kl(trained, plain)
    assert effect > 10 * noise  # the adapter changes the model a lot...
    assert right < 3 * noise + 1e-3  # ...and llama.cpp applies exactly that change
    assert wrong > 10 * right, (noise, right, wrong)


def test_cancel_and_kill_leave_no_adapter(tmp_path: Path) -> None:
    out = tmp_path / "models" / "ft-cancel"
    spec = spec_file(tmp_path, hyperparameters={"n_epochs": 3})
    proc = start_worker(spec, out)
    events_until(proc, "step")
    proc.send_signal(signal.SIGTERM)  # asks for a stop before the next step
    last = events_until(proc, "cancelled")[-1]
    assert proc.wait(timeout=60) == 130 and last["event"] == "cancelled" and last["step"] >= 1
    assert not out.exists() and list(out.parent.iterdir()) == []  # nothing, not even staging

    proc = start_worker(spec, out)
    events_until(proc, "step")
    proc.kill()
    proc.wait(timeout=30)
    assert not out.exists()
    left = [p.name for p in out.parent.iterdir()]
    assert left == [f".ft-cancel.tuning-{proc.pid}"]  # a killed run's staging folder...
    remove_stale(out)  # ...which the next run for the same folder removes first
    assert list(out.parent.iterdir()) == []


def test_refusals_are_one_line_with_the_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    out = tmp_path / "out"
    proc = subprocess.run(command(spec_file(tmp_path, training_file=str(bad)), out),
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 1 and not out.exists()
    (line,) = proc.stdout.splitlines()
    error = json.loads(line)["error"]
    assert error["param"] == "line 1: messages" and "no assistant message" in error["message"]
    assert error["status"] == 400 and "Traceback" not in proc.stderr

    def refusal(**fields: Any) -> dict[str, Any]:
        buffer = io.StringIO()
        code = run(spec_file(tmp_path, **fields), out, buffer, threading.Event())
        assert code == 1 and not out.exists()
        return dict(json.loads(buffer.getvalue().splitlines()[-1])["error"])

    assert refusal(base="no-such-model")["code"] == "model_not_found"
    ct2 = tmp_path / "ct2"
    ct2.mkdir()
    (ct2 / "model.bin").write_bytes(b"\0")
    assert "CTranslate2" in refusal(base=str(ct2))["message"]
    memory = refusal(memory_limit=2**30)
    assert memory["code"] == "insufficient_memory" and "only 1.00 GiB" in memory["message"]
    assert list(tmp_path.glob(".out.tuning-*")) == []
