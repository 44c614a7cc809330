"""The CTranslate2 engine over real HTTP: batching keeps answers right, what a shared batch
cannot give is refused by name, clients that leave stop their generation."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from helpers import ServerProcess, wait_until

pytestmark = pytest.mark.engines("ctranslate2")

PROMPTS = [
    "Name three colors.",
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Give me two animals that live in water.",
    "What is 2 + 2?",
    "Say hello in Turkish.",
    "Name a fruit that is yellow.",
    "What day comes after Monday?",
]


def active(server: ServerProcess) -> int:
    models = httpx.get(f"{server.url}/health", timeout=5).json()["models"]
    return int(sum(m.get("active", 0) + m.get("queued", 0) for m in models))


def test_health_names_the_engine(server: ServerProcess) -> None:
    body = httpx.get(f"{server.url}/health", timeout=5).json()
    assert body["status"] == "ok"
    assert [m["engine"] for m in body["models"]] == ["ctranslate2"]


def test_concurrent_greedy_requests_match_sequential(
    server: ServerProcess,
) -> None:
    def body(prompt: str) -> dict[str, object]:
        return {
            "model": "default",
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 24,
            "temperature": 0,
        }

    alone = [
        httpx.post(f"{server.url}/v1/chat/completions", json=body(p), timeout=120).json()
        for p in PROMPTS
    ]

    async def together() -> list[dict[str, object]]:
        async with httpx.AsyncClient(timeout=120) as http:
            responses = await asyncio.gather(
                *(http.post(f"{server.url}/v1/chat/completions", json=body(p)) for p in PROMPTS)
            )
        return [r.json() for r in responses]

    batched = asyncio.run(together())
    for a, b in zip(alone, batched, strict=True):
        assert b["choices"][0]["message"]["content"] == a["choices"][0]["message"]["content"]  # type: ignore[index]
        assert b["usage"] == a["usage"]


def test_seeded_sampling_is_repeatable_while_a_batch_runs(server: ServerProcess) -> None:
    seeded = {
        "model": "default",
        "messages": [{"role": "user", "content": "Tell me a short story."}],
        "max_tokens": 24,
        "temperature": 1.0,
        "seed": 77,
    }
    greedy = {**seeded, "seed": None, "temperature": 0, "max_tokens": 48}

    async def run() -> tuple[str, str]:
        async with httpx.AsyncClient(timeout=120) as http:
            url = f"{server.url}/v1/chat/completions"
            first = await http.post(url, json=seeded)
            results = await asyncio.gather(
                *(http.post(url, json=greedy) for _ in range(4)), http.post(url, json=seeded)
            )
        return (
            first.json()["choices"][0]["message"]["content"],
            results[-1].json()["choices"][0]["message"]["content"],
        )

    alone, beside_a_batch = asyncio.run(run())
    assert alone == beside_a_batch


@pytest.mark.parametrize("param", ["presence_penalty", "frequency_penalty"])
def test_penalties_are_refused_by_name(client: openai.OpenAI, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=4,
            **{param: 0.5},  # type: ignore[arg-type]
        )
    assert info.value.code == "unsupported_parameter"
    body = info.value.body
    assert isinstance(body, dict) and body["param"] == param
    assert "CTranslate2" in body["message"]


def test_neutral_penalties_are_accepted(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=4,
        presence_penalty=0,
        frequency_penalty=0,
    )
    assert r.choices[0].finish_reason in ("stop", "length")


def test_disconnect_stops_the_generation(server: ServerProcess) -> None:
    body = {
        "model": "default",
        "prompt": "Count from one to one thousand: one, two, three,",
        "max_tokens": 900,
        "temperature": 0,
        "stream": True,
    }
    with (
        httpx.Client(timeout=60) as http,
        http.stream("POST", f"{server.url}/v1/completions", json=body) as r,
    ):
        assert r.status_code == 200
        lines = r.iter_lines()
        got = [next(lines) for _ in range(6)]
        assert any(line.startswith("data: ") for line in got)
        assert active(server) >= 1
    # 900 tokens take far longer than this at CTranslate2's speed here.
    assert wait_until(lambda: active(server) == 0, timeout=10)
    r2 = httpx.post(
        f"{server.url}/v1/completions",
        json={"model": "default", "prompt": "Hi", "max_tokens": 2},
        timeout=30,
    )
    assert r2.status_code == 200


def test_non_streaming_client_that_gives_up_stops_its_generation(server: ServerProcess) -> None:
    body = {
        "model": "default",
        "prompt": "Count from one to one thousand: one, two, three,",
        "max_tokens": 900,
        "temperature": 0,
    }
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/v1/completions", json=body, timeout=1.0)
    assert wait_until(lambda: active(server) == 0, timeout=10)
