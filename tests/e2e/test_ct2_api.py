"""The CTranslate2 engine over real HTTP: batching keeps answers right, what a shared batch
cannot give is refused by name, clients that leave stop their generation."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from helpers import ServerProcess

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
