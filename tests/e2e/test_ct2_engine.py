"""The CTranslate2 engine in-process on the converted default model: batching decisions."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ocak.engines.ctranslate2.engine import Ct2Engine
from ocak.errors import ContextLengthExceeded, UnsupportedParameter
from ocak.protocol.generation import Constraint, Finished, GenerationRequest, TextDelta


async def answer(engine: Ct2Engine, request: GenerationRequest) -> tuple[str, Finished]:
    pieces: list[str] = []
    async for event in engine.generate(request):
        if isinstance(event, TextDelta):
            pieces.append(event.text)
        elif isinstance(event, Finished):
            return "".join(pieces), event
    raise AssertionError("no Finished event")


def run_with(
    model: Path, batching: str, requests: list[GenerationRequest]
) -> tuple[int, list[str]]:
    """Batches used and texts, for requests sent together."""

    async def main() -> tuple[int, list[str]]:
        engine = Ct2Engine("m", model, ctx_size=256, threads=2, batching=batching)
        await engine.load()
        assert engine.state == "ready", engine.error
        assert engine.scheduler is not None
        before = engine.scheduler.batches
        results = await asyncio.gather(*(answer(engine, r) for r in requests))
        used = engine.scheduler.batches - before
        await engine.close()
        return used, [text for text, _ in results]

    return asyncio.run(main())


def greedy(prompt: str) -> GenerationRequest:
    return GenerationRequest(model="m", prompt=prompt, max_tokens=8, temperature=0)


def test_same_length_prompts_share_one_batch(ct2_model: Path) -> None:
    prompts = ["One, two, three,", "Red, blue, green,", "Cats, dogs, birds,", "A, B, C,"]
    requests = [greedy(p) for p in prompts]
    used, texts = run_with(ct2_model, "exact", requests)
    lengths = {len(r.prompt or "") for r in requests}
    assert used < len(requests), (used, lengths)
    alone = [run_with(ct2_model, "exact", [r])[1][0] for r in requests]
    assert texts == alone


def test_similar_policy_batches_different_lengths(ct2_model: Path) -> None:
    requests = [greedy("Hi"), greedy("Tell me about the weather in Paris today, please")]
    exact, _ = run_with(ct2_model, "exact", requests)
    similar, _ = run_with(ct2_model, "similar", requests)
    assert exact == 2 and similar == 1


def test_refusals_and_context_errors_come_before_any_text(ct2_model: Path) -> None:
    async def main() -> None:
        engine = Ct2Engine("m", ct2_model, ctx_size=64, threads=2)
        await engine.load()
        for request, param in [
            (GenerationRequest(model="m", prompt="x", presence_penalty=1.0), "presence_penalty"),
            (GenerationRequest(model="m", prompt="x", frequency_penalty=-1.0), "frequency_penalty"),
            (GenerationRequest(model="m", prompt="x", constraint=Constraint()), "response_format"),
            (GenerationRequest(model="m", prompt="x", min_p=0.05), "min_p"),
            (
                GenerationRequest(model="m", prompt="x", repeat_penalty=1.1, repeat_last_n=16),
                "repeat_last_n",
            ),
        ]:
            with pytest.raises(UnsupportedParameter) as info:
                await anext(engine.generate(request))
            assert info.value.param == param
        with pytest.raises(ContextLengthExceeded):
            await anext(engine.generate(GenerationRequest(model="m", prompt="x", max_tokens=100)))
        await engine.close()

    asyncio.run(main())
