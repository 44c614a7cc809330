"""Many users at once on the real default model: batching must not change answers."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai

from helpers import ServerProcess

PROMPTS = [f"Tell me one fact about the number {i}." for i in range(16)]


async def _greedy(client: openai.AsyncOpenAI, prompt: str, **kw: object) -> tuple[str, str]:
    r = await client.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": prompt}],
        temperature=0,
        **kw,  # type: ignore[arg-type]
    )
    return r.choices[0].message.content or "", r.choices[0].finish_reason


def test_sixteen_concurrent_greedy_requests_match_sequential(server: ServerProcess) -> None:
    async def main() -> None:
        async with openai.AsyncOpenAI(
            base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=300
        ) as client:
            alone = [await _greedy(client, p, max_tokens=32) for p in PROMPTS]
            together = await asyncio.gather(*(_greedy(client, p, max_tokens=32) for p in PROMPTS))
            assert together == alone

    asyncio.run(main())


def test_mixed_stops_and_lengths_in_one_batch_each_end_where_they_should(
    server: ServerProcess,
) -> None:
    async def main() -> None:
        async with openai.AsyncOpenAI(
            base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=300
        ) as client:
            base = [await _greedy(client, p, max_tokens=40) for p in PROMPTS[:8]]
            kwargs: list[dict[str, object]] = []
            for i, (text, _) in enumerate(base):
                if i % 2 == 0 and len(text) > 20:
                    kwargs.append({"max_tokens": 40, "stop": [text[10:14]]})
                else:
                    kwargs.append({"max_tokens": 3 + i})
            results = await asyncio.gather(
                *(_greedy(client, p, **kw) for p, kw in zip(PROMPTS[:8], kwargs, strict=True))
            )
            for (text, _), kw, (got, finish) in zip(base, kwargs, results, strict=True):
                if "stop" in kw:
                    stop = kw["stop"][0]  # type: ignore[index]
                    assert finish == "stop"
                    assert got == text[: text.index(stop)]
                else:
                    assert finish == "length"
                    assert text.startswith(got)
                    assert got != text

    asyncio.run(main())


def test_queue_overflow_is_429_with_retry_after(server: ServerProcess) -> None:
    """16 sequences run, 4 may wait (the session server's --max-queue); the rest get 429."""

    async def main() -> list[httpx.Response]:
        body = {
            "model": "default",
            "prompt": "Write a very long story about a dragon.",
            "max_tokens": 100,
        }
        async with httpx.AsyncClient(timeout=300) as http:
            return await asyncio.gather(
                *(http.post(f"{server.url}/v1/completions", json=body) for _ in range(26))
            )

    responses = asyncio.run(main())
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) >= 20, codes
    refused = [r for r in responses if r.status_code == 429]
    assert refused, codes
    for r in refused:
        assert int(r.headers["retry-after"]) >= 1
        err = r.json()["error"]
        assert err["type"] == "rate_limit_error"
        assert err["code"] == "queue_full"
    assert set(codes) <= {200, 429}


def test_queue_timeout_is_503(tmp_path: object) -> None:
    proc = ServerProcess(["--parallel", "1", "--queue-timeout", "0.5", "--ctx-size", "1024"])
    try:
        proc.wait_ready()

        async def main() -> tuple[httpx.Response, httpx.Response]:
            async with httpx.AsyncClient(timeout=120) as http:
                # ~800 prompt tokens keep the only sequence busy for seconds whatever is
                # sampled (a short prompt may meet its end-of-text token at once).
                long = http.post(
                    f"{proc.url}/v1/completions",
                    json={
                        "model": "default",
                        "prompt": "Once upon a time " * 200,
                        "max_tokens": 50,
                    },
                )
                first = asyncio.ensure_future(long)
                await asyncio.sleep(0.3)
                t0 = time.monotonic()
                second = await http.post(
                    f"{proc.url}/v1/completions",
                    json={"model": "default", "prompt": "Hi", "max_tokens": 2},
                )
                assert time.monotonic() - t0 < 30
                return await first, second

        first, second = asyncio.run(main())
        assert first.status_code == 200
        assert second.status_code == 503
        assert second.json()["error"]["type"] == "server_error"
        assert "retry-after" in second.headers
    finally:
        proc.stop()


def test_a_repeated_system_prompt_is_reused_and_gives_the_same_answer(
    server: ServerProcess,
) -> None:
    rules = " ".join(
        f"Rule {k}: the innkeeper greets travellers and never speaks of the cellar."
        for k in range(20)
    )

    def ask(system: str) -> tuple[str, int]:
        r = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={
                "model": "default",
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": "Who are you?"},
                ],
                "max_tokens": 24,
                "temperature": 0,
            },
            timeout=120,
        )
        assert r.status_code == 200, r.text
        body = r.json()
        cached = body["usage"]["prompt_tokens_details"]["cached_tokens"]
        return body["choices"][0]["message"]["content"], cached

    first, _ = ask(rules)
    ask("You are a pirate.")  # another conversation in between must not evict it
    again, cached = ask(rules)
    assert cached >= 256  # whole prefill chunks of the ~400-token prompt came from the cache
    assert again == first  # and the answer is the one computed from scratch
