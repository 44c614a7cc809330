"""The converter's promises: auto quantization, memory refusal, atomic writes, re-runs,
GPU detection (decision logic with the probes replaced: no GPU run is faked)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ct2_helpers import ocak_cli, write_tiny_checkpoint
from ocak.engines.ctranslate2 import engine as ct2_engine
from ocak.errors import OcakError
from ocak.models import convert as conv
from ocak.models.convert import ConvertError, NotEnoughMemory, choose_quantization, convert
from ocak.models.hardware import CudaStatus, DeviceError, detect_cuda, pick_device
from ocak.models.store import available

pytest.importorskip("torch")

NO_GPU = CudaStatus()
GPU = CudaStatus(1, True, None, frozenset({"float16", "int8_float16"}))
BROKEN = CudaStatus(1, False, "libcublas.so.12 is missing", frozenset({"float16"}))


def stored(folder: Path) -> list[str]:
    """Servable models in a store folder (the embedded default aside)."""
    return [s.id for s in available(folder) if s.id != "default"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("src") / "tiny-llama", "llama")


# -- auto quantization and GPU detection -------------------------------------------


def test_auto_is_int8_on_cpu_and_float16_with_a_gpu() -> None:
    assert choose_quantization("auto", NO_GPU)[0] == "int8"
    assert "no CUDA GPU" in choose_quantization("auto", NO_GPU)[1]
    assert choose_quantization("auto", GPU)[0] == "float16"
    quant, why = choose_quantization("auto", BROKEN)
    assert quant == "float16" and "libcublas.so.12" in why
    assert choose_quantization("bfloat16", GPU) == ("bfloat16", "bfloat16, as asked")
    with pytest.raises(ConvertError, match="unknown quantization 'int3'"):
        choose_quantization("int3", NO_GPU)


def test_detect_cuda_names_the_missing_cublas_and_the_fix() -> None:
    status = detect_cuda(
        device_count=lambda: 1,
        compute_types=lambda _: frozenset({"float16"}),
        cublas=lambda: None,
        others=lambda: ["libcublas.so.13"],
    )
    assert status.present and not status.usable
    assert status.problem is not None
    for needle in ("libcublas.so.12", "libcublas.so.13", "nvidia-cublas-cu12", "--device cpu"):
        assert needle in status.problem


def test_detect_cuda_with_no_gpu_or_a_working_one() -> None:
    none = detect_cuda(device_count=lambda: 0, cublas=lambda: None)
    assert not none.present and none.problem is None

    def no_runtime() -> int:
        raise RuntimeError("CUDA driver version is insufficient")

    assert not detect_cuda(device_count=no_runtime).present
    ok = detect_cuda(
        device_count=lambda: 2,
        compute_types=lambda _: frozenset({"float16"}),
        cublas=lambda: "libcublas.so.12",
    )
    assert ok.usable and ok.devices == 2


def test_pick_device_falls_back_to_the_cpu_only_when_asked() -> None:
    assert pick_device("auto", NO_GPU) == "cpu"
    assert pick_device("auto", GPU) == "cuda"
    assert pick_device("cpu", BROKEN) == "cpu"
    with pytest.raises(DeviceError, match=r"libcublas\.so\.12"):
        pick_device("auto", BROKEN)
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        pick_device("cuda", NO_GPU)


def test_engine_on_a_broken_gpu_says_so_and_runs_on_cpu_when_asked(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = convert(tiny, tmp_path, quantization="int8", cuda=NO_GPU).path
    problem = detect_cuda(device_count=lambda: 1, cublas=lambda: None, others=lambda: [])
    monkeypatch.setattr(ct2_engine, "detect_cuda", lambda: problem)

    async def load(device: str) -> tuple[str, str | None]:
        engine = ct2_engine.Ct2Engine("tiny", model, ctx_size=64, threads=1, device=device)
        await engine.load()
        state, error = engine.state, engine.error
        await engine.close()
        return state, error

    state, error = asyncio.run(load("auto"))
    assert state == "error"
    assert error is not None and "libcublas.so.12" in error and "--device cpu" in error
    assert asyncio.run(load("cpu")) == ("ready", None)


# -- memory --------------------------------------------------------------------------


def test_memory_refusal_gives_the_estimate_and_the_free_memory(tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(NotEnoughMemory) as info:
        convert(tiny, tmp_path, quantization="int8", memory_limit=2**20, cuda=NO_GPU)
    assert info.value.estimate > info.value.available == 2**20
    assert "GiB" in info.value.message and "--force" in info.value.message
    assert stored(tmp_path) == []
    forced = convert(tiny, tmp_path, quantization="int8", memory_limit=2**20, force=True)
    assert (forced.path / "model.bin").is_file()


def test_cli_refuses_with_numbers_and_writes_nothing(tiny: Path, tmp_path: Path) -> None:
    result = ocak_cli("models", "convert", str(tiny), "--max-memory", "1MiB", data_dir=tmp_path)
    assert result.returncode == 1
    said = " ".join(result.stderr.split())  # rich wraps long lines
    assert "needs about" in said and "but only 0.0 GiB is free" in said
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


# -- atomic write and re-runs ----------------------------------------------------------


def test_an_interrupted_conversion_leaves_no_model(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Path] = []

    def interrupt(folder: Path) -> None:  # every file is written, the rename has not happened
        seen.extend(folder.iterdir())
        raise KeyboardInterrupt

    monkeypatch.setattr(conv, "fsync_tree", interrupt)
    with pytest.raises(KeyboardInterrupt):
        convert(tiny, tmp_path, name="tiny", quantization="int8", cuda=NO_GPU)
    assert any(p.name == "model.bin" for p in seen)
    assert list(tmp_path.iterdir()) == []  # neither the model nor the temporary folder
    assert stored(tmp_path) == []


def test_a_killed_conversion_leaves_no_model_and_the_next_run_converts(
    tiny: Path, tmp_path: Path
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ocak", "models", "convert", str(tiny), "--name", "tiny"],
        env={**os.environ, "OCAK_DATA_DIR": str(tmp_path)},
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # plain progress lines: not a terminal
        if "] load:" in line:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = tmp_path / "models"
    leftovers = [p.name for p in store.iterdir()]
    assert all(name.startswith(".tiny.converting-") for name in leftovers), leftovers
    assert stored(store) == []
    done = ocak_cli("models", "convert", str(tiny), "--name", "tiny", data_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    assert [p.name for p in store.iterdir()] == ["tiny"]  # the stale folder is gone


def test_a_second_run_finds_the_model_and_does_nothing(tiny: Path, tmp_path: Path) -> None:
    first = convert(tiny, tmp_path, quantization="int8", cuda=NO_GPU)
    assert not first.skipped and first.name == "tiny-llama-int8"
    stamp = (first.path / "model.bin").stat().st_mtime_ns
    again = convert(tiny, tmp_path, quantization="int8", cuda=NO_GPU)
    assert again.skipped and again.path == first.path
    assert (first.path / "model.bin").stat().st_mtime_ns == stamp
    with pytest.raises(ConvertError, match="already stored as 'tiny-llama-int8'"):
        convert(tiny, tmp_path, name="tiny-llama-int8", quantization="float32", cuda=NO_GPU)
    replaced = convert(
        tiny, tmp_path, name="tiny-llama-int8", quantization="float32", force=True, cuda=NO_GPU
    )
    assert replaced.quantization == "float32" and not replaced.skipped
    assert [p.name for p in tmp_path.iterdir()] == ["tiny-llama-int8"]


def test_cli_rerun_says_already_converted_and_models_list_shows_it(
    tiny: Path, tmp_path: Path
) -> None:
    args = ("models", "convert", str(tiny), "--quantization", "float32")
    first = ocak_cli(*args, data_dir=tmp_path)
    assert first.returncode == 0, first.stderr
    for stage in ("inspect:", "load:", "convert:", "quantize:", "write:"):
        assert stage in first.stderr
    assert "float32, as asked" in first.stdout
    second = ocak_cli(*args, data_dir=tmp_path)
    assert second.returncode == 0 and "already converted" in second.stdout
    listing = ocak_cli("models", "list", data_dir=tmp_path)
    line = next(x for x in listing.stdout.splitlines() if "tiny-llama-float32" in x)
    assert "ctranslate2" in line and "float32" in line and "MiB" in line


def test_the_tokenizer_and_chat_template_travel_with_the_model(tmp_path: Path) -> None:
    source = write_tiny_checkpoint(tmp_path / "src", "llama")
    template = "{% for m in messages %}<s>{{ m['content'] }}</s>{% endfor %}"
    (source / "chat_template.jinja").write_text(template)
    result = convert(source, tmp_path / "store", quantization="int8", cuda=NO_GPU)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "ocak.json"):
        assert (result.path / name).is_file(), name
    assert (result.path / "chat_template.jinja").read_text() == template
    assert result.metadata["source"]["path"] == str(source.resolve())


def test_sources_that_are_not_checkpoints_are_refused(tmp_path: Path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("hello")
    with pytest.raises(OcakError, match="neither a Hugging Face checkpoint"):
        convert(junk, tmp_path / "store", cuda=NO_GPU)
    with pytest.raises(OcakError, match="does not exist"):
        convert(tmp_path / "missing", tmp_path / "store", cuda=NO_GPU)
