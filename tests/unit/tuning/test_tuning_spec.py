"""What a run is refused for before any weight is loaded: a bad spec, bad hyperparameters, an
unknown base, a base that cannot be trained here, a malformed file, too little memory."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest

from ocak.errors import InvalidRequest, ModelNotFound
from ocak.tuning import NotEnoughMemory, TuneSpec, UnsupportedBase, find_base, prepare
from ocak.tuning.memory import check_fits, estimate
from ocak.tuning.spec import ALL_LINEAR, Hyperparameters, resolve

GOOD_LINE = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}


def training_file(tmp_path: Path, *lines: object) -> str:
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines or [GOOD_LINE]))
    return str(path)


def tiny_gguf(path: Path, arch: str, kind: str = "model") -> Path:
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_type(kind)
    if kind == "adapter":
        writer.add_string("adapter.type", "lora")
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_auto_hyperparameters_and_the_learning_rate() -> None:
    auto = resolve(Hyperparameters(), 40)
    assert (auto.n_epochs, auto.batch_size, auto.learning_rate) == (3, 4, pytest.approx(1e-3))
    assert resolve(Hyperparameters(), 2).batch_size == 2  # no batch bigger than the file
    assert resolve(Hyperparameters(), 3).n_epochs == 10  # a tiny file is seen more often
    chosen = resolve(Hyperparameters(n_epochs=1, batch_size=8, learning_rate_multiplier=0.5), 40)
    assert (chosen.n_epochs, chosen.batch_size, chosen.learning_rate) == (1, 8, pytest.approx(1e-4))
    for field, value in (("n_epochs", 0), ("batch_size", 500), ("learning_rate_multiplier", 0)):
        with pytest.raises(InvalidRequest) as caught:
            resolve(Hyperparameters.model_validate({field: value}), 40)
        assert caught.value.param == f"hyperparameters.{field}"


def test_a_bad_spec_names_its_field() -> None:
    with pytest.raises(InvalidRequest) as caught:
        TuneSpec.from_json('{"training_file": "x", "hyperparameters": {"n_epochs": "many"}}')
    assert caught.value.param is not None and caught.value.param.startswith("hyperparameters")
    with pytest.raises(InvalidRequest, match="training_file"):
        TuneSpec.from_json("{}")
    with pytest.raises(InvalidRequest):
        TuneSpec.from_json("not json")


def test_the_default_base_is_found_with_its_shape() -> None:
    base = find_base("default", None)
    assert (base.arch, base.layers, base.hidden, base.heads, base.kv_heads) == (
        "llama",
        30,
        576,
        9,
        3,
    )
    assert base.permute_qk and 130e6 < base.n_params < 140e6
    assert base.chat_template is not None and "<|im_start|>" in base.chat_template


def test_bases_that_cannot_be_trained_say_why(tmp_path: Path) -> None:
    store = tmp_path / "models"
    ct2 = store / "smol-int8"
    ct2.mkdir(parents=True)
    (ct2 / "model.bin").write_bytes(b"\0")
    with pytest.raises(ModelNotFound):
        find_base("no-such-model", store)
    with pytest.raises(UnsupportedBase, match="CTranslate2 model"):
        find_base(str(ct2), store)
    with pytest.raises(
        UnsupportedBase, match="'gpt2' model; ocak trains adapters for gemma3, llama"
    ):
        find_base(str(tiny_gguf(tmp_path / "g.gguf", "gpt2")), store)
    with pytest.raises(UnsupportedBase, match="an adapter, not a base"):
        find_base(str(tiny_gguf(tmp_path / "a.gguf", "llama", "adapter")), store)
    hf = tmp_path / "hf-folder"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    with pytest.raises(UnsupportedBase, match="not a GGUF file"):
        find_base(str(hf), store)


def test_prepare_checks_the_files_the_base_and_the_hyperparameters(tmp_path: Path) -> None:
    spec = TuneSpec(training_file=training_file(tmp_path))
    base, data, valid, hp = prepare(spec)
    assert base.name == "default" and len(data.examples) == 1 and valid is None
    assert hp.batch_size == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(GOOD_LINE) + "\n" + '{"messages": [{"role": "user"}]}\n')
    with pytest.raises(InvalidRequest) as caught:
        prepare(TuneSpec(training_file=str(bad)))
    assert caught.value.param == "line 2: messages[0].content"
    with pytest.raises(InvalidRequest, match="cannot be read"):
        prepare(TuneSpec(training_file=str(tmp_path / "train.jsonl"), validation_file="/nope"))
    with pytest.raises(ModelNotFound):
        prepare(TuneSpec(training_file=str(tmp_path / "train.jsonl"), base="nope"))


def test_the_memory_estimate_and_the_refusal() -> None:
    base = find_base("default", None)
    small = estimate(base, batch=4, seq_len=64, rank=8, targets=ALL_LINEAR)
    # SmolLM2-135M, rank 8 on every projection: 2.44M adapter parameters
    assert small.lora_params == 2_442_240 and small.lora == 16 * small.lora_params
    assert 1.5 * 2**30 < small.total < 4 * 2**30
    big = estimate(base, batch=32, seq_len=2048, rank=8, targets=ALL_LINEAR)
    assert big.activations > 50 * small.activations
    check_fits(small, 64 * 2**30, what="it")
    with pytest.raises(NotEnoughMemory) as caught:
        check_fits(big, 8 * 2**30, what="'default'")
    message = caught.value.message
    assert "needs about" in message and "only 8.00 GiB is available" in message
    assert caught.value.code == "insufficient_memory" and caught.value.status == 400
    # Converting the merged model for CTranslate2 needs room of its own, said in the refusal.
    merged = estimate(base, batch=4, seq_len=64, rank=8, targets=ALL_LINEAR, merge=True)
    assert merged.total - small.total == merged.merge == 6 * base.n_params
    with pytest.raises(NotEnoughMemory) as caught:
        check_fits(merged, small.total, what="'default'")
    assert "converting the merged model 0.7" in caught.value.message
