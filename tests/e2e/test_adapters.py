"""LoRA adapters in a real ``ocak serve``: a random rank-8 adapter for an F16 copy of the
bundled SmolLM2 (written here with ``gguf``), stored with ``ocak models add``, chosen per
request by the field ``adapters`` or by the model name (``BASE@ADAPTER:SCALE``, or the
adapter's own name).

What a user would notice if it broke: scale 0 must answer exactly as the base model; scale
1 exactly as the reference model with the LoRA merged into its F16 weights; requests with
different adapters running at once must each answer as they would alone; and a prompt's
cached cells must never serve a request with another adapter or scale.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from helpers import ServerProcess, running
from lora_files import f16_model, merged_model, random_lora
from ocak.models.store import default_model_path

BASE, MERGED, PIRATE, KNIGHT, MISFIT = "smol-f16", "smol-f16-merged", "pirate", "knight", "misfit"
PROMPTS = [
    "Write a short poem about the sea.",
    "Tell me about a dragon who lives in a cave.",
    "Give me three tips for a job interview.",
]
PERSONA = (
    "You are Brother Aldric, the keeper of the monastery's library. You speak slowly, "
    "quote old books, and distrust anyone who arrives after dark. "
) * 3


@pytest.fixture(scope="module")
def lora_files(request: pytest.FixtureRequest) -> dict[str, Path]:
    """The F16 base, two adapters and the merged reference (made once, kept in pytest's
    cache: about 520 MiB)."""
    folder = Path(str(request.config.cache.mkdir("ocak-lora")))  # type: ignore[union-attr]
    files = {
        BASE: folder / "base-f16.gguf",
        PIRATE: folder / "pirate.gguf",
        KNIGHT: folder / "knight.gguf",
        MERGED: folder / "merged-f16.gguf",
        MISFIT: folder / "misfit.gguf",
    }
    done = folder / "complete-v1"
    if not done.exists():
        f16_model(default_model_path(), files[BASE])
        random_lora(files[BASE], files[PIRATE], seed=0)
        random_lora(files[BASE], files[KNIGHT], seed=1, targets=("attn_k", "ffn_up"))
        merged_model(files[BASE], files[PIRATE], files[MERGED], scale=1.0)
        random_lora(files[BASE], files[MISFIT], misfit=True)
        done.touch()
    return files


def ocak(*args: str, data: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ocak", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "OCAK_DATA_DIR": str(data)},
        timeout=120,
    )


@pytest.fixture(scope="module")
def server(lora_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Any:
    data = tmp_path_factory.mktemp("adapters")
    store = data / "models"
    store.mkdir()
    for name in (BASE, MERGED):  # big files: linked into the store, as before manifests
        (store / f"{name}.gguf").symlink_to(lora_files[name])
    pirate = str(lora_files[PIRATE])
    added = ocak("models", "add", pirate, "--name", PIRATE, "--base", BASE, data=data)
    assert added.returncode == 0 and "pirate (adapter)" in added.stdout, added.stderr
    for name in (KNIGHT, MISFIT):
        added = ocak("models", "add", str(lora_files[name]), "--name", name, data=data)
        assert added.returncode == 0, added.stderr
    args = ["--parallel", "4", "--ctx-size", "768", "--keep-alive", "-1"]
    with running(args, env={"OCAK_DATA_DIR": str(data)}) as proc:
        yield proc


def chat(server: ServerProcess, model: str, prompt: str, **extra: Any) -> dict[str, Any]:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 40,
        "temperature": 0,
        **extra,
    }
    r = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=180)
    assert r.status_code == 200, r.text
    return dict(r.json())


def text(server: ServerProcess, model: str, prompt: str, **extra: Any) -> str:
    return str(chat(server, model, prompt, **extra)["choices"][0]["message"]["content"])


def test_scale_0_is_the_base_and_scale_1_the_merged_reference(server: ServerProcess) -> None:
    base = [text(server, BASE, p) for p in PROMPTS]
    zero = [text(server, f"{BASE}@{PIRATE}:0", p) for p in PROMPTS]
    assert zero == base
    merged = [text(server, MERGED, p) for p in PROMPTS]
    by_field = [text(server, BASE, p, adapters=[{"name": PIRATE, "scale": 1.0}]) for p in PROMPTS]
    by_name = [text(server, PIRATE, p) for p in PROMPTS]  # its manifest names the base
    assert by_field == merged
    assert by_name == merged
    assert merged != base  # the adapter changes answers, so the equalities above mean something
    # The real OpenAI client sends the field as an extra.
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    reply = client.chat.completions.create(
        model=BASE,
        messages=[{"role": "user", "content": PROMPTS[0]}],
        max_tokens=40,
        temperature=0,
        extra_body={"adapters": [{"name": PIRATE}]},
    )
    assert reply.choices[0].message.content == merged[0]


def test_mixed_adapters_at_once_answer_as_each_alone(server: ServerProcess) -> None:
    models = [BASE, f"{BASE}@{PIRATE}", f"{BASE}@{KNIGHT}", f"{BASE}@{PIRATE}:0.5"]
    alone = {m: text(server, m, PROMPTS[1]) for m in models}
    assert len(set(alone.values())) == len(models)  # four different answers
    with ThreadPoolExecutor(8) as pool:
        both = list(pool.map(lambda m: (m, text(server, m, PROMPTS[1])), models * 2))
    for model, answer in both:
        assert answer == alone[model], model


def test_cached_cells_are_never_shared_across_adapters_or_scales(server: ServerProcess) -> None:
    def ask(model: str) -> tuple[str, int]:
        messages = [{"role": "system", "content": PERSONA}]
        body = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={
                "model": model,
                "messages": [*messages, {"role": "user", "content": "Who may enter tonight?"}],
                "max_tokens": 24,
                "temperature": 0,
            },
            timeout=180,
        ).json()
        cached = body["usage"]["prompt_tokens_details"]["cached_tokens"]
        return body["choices"][0]["message"]["content"], int(cached)

    first, _ = ask(f"{BASE}@{KNIGHT}")
    again, cached = ask(f"{BASE}@{KNIGHT}")
    assert cached > 0 and again == first  # the same adapter reuses the persona's cells
    for other in (BASE, f"{BASE}@{KNIGHT}:0.5", f"{BASE}@{PIRATE}"):
        _, cached = ask(other)
        assert cached == 0, other
    knight_after, cached = ask(f"{BASE}@{KNIGHT}")
    assert knight_after == first


def test_adapter_errors_are_clear(server: ServerProcess, lora_files: dict[str, Path]) -> None:
    url = f"{server.url}/v1/chat/completions"
    body = {"model": BASE, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    r = httpx.post(url, json={**body, "adapters": [{"name": "nope"}]}, timeout=30)
    assert r.status_code == 404 and r.json()["error"]["code"] == "adapter_not_found"
    assert "nope" in r.json()["error"]["message"]
    r = httpx.post(url, json={**body, "model": f"{BASE}@{PIRATE}:lots"}, timeout=30)
    assert r.status_code == 404  # 'pirate:lots' is no stored adapter
    r = httpx.post(url, json={**body, "model": f"{BASE}@{PIRATE}:99"}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"
    r = httpx.post(url, json={**body, "adapters": [{"name": PIRATE, "scale": "x"}]}, timeout=30)
    assert r.status_code == 400
    # An adapter whose shapes are not the model's: llama.cpp refuses it, and ocak says so.
    r = httpx.post(url, json={**body, "adapters": [{"name": MISFIT}]}, timeout=30)
    assert r.status_code == 400 and "does not fit" in r.json()["error"]["message"], r.text
    assert httpx.post(url, json=body, timeout=30).status_code == 200  # and serves on
    r = httpx.post(url, json={**body, "model": KNIGHT}, timeout=30)
    assert r.status_code == 404 and f"BASE@{KNIGHT}" in r.json()["error"]["message"]
    listed = {m["id"]: m for m in httpx.get(f"{server.url}/v1/models", timeout=10).json()["data"]}
    assert listed[PIRATE]["kind"] == "adapter" and listed[PIRATE]["meta"]["base"] == BASE
    assert listed[BASE]["kind"] == "chat"
