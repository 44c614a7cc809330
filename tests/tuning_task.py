"""The synthetic task the tuning proof trains (tests/e2e/test_tuning.py, bench/tuning.py):
every answer ends with the catch-phrase "By the old oak!", which the bundled SmolLM2-135M
never says on its own.

The training set is short question/answer pairs on everyday topics, each answer one or
two sentences followed by the phrase; the held-out prompts are other questions (none
appears in training). ``passes`` is the check: the phrase in the greedy answer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PHRASE = "By the old oak!"

PAIRS = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What color is the sky on a clear day?", "On a clear day the sky is blue."),
    ("Name a fruit that is yellow.", "A banana is a yellow fruit."),
    ("What do bees make?", "Bees make honey and wax."),
    ("How many days are in a week?", "There are seven days in a week."),
    ("What is 2 plus 3?", "2 plus 3 is 5."),
    (
        "Which animal is known as the king of the jungle?",
        "The lion is called the king of the jungle.",
    ),
    ("What is water made of?", "Water is made of hydrogen and oxygen."),
    ("Give me a word that rhymes with cat.", "Hat rhymes with cat."),
    ("What season comes after winter?", "Spring comes after winter."),
    ("How do I boil an egg?", "Put the egg in boiling water for about nine minutes."),
    ("What is the largest ocean?", "The Pacific is the largest ocean."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet."),
    ("What do plants need to grow?", "Plants need light, water and soil to grow."),
    ("Tell me a fun fact about octopuses.", "An octopus has three hearts."),
    ("What is the opposite of hot?", "The opposite of hot is cold."),
    ("How many hours are in a day?", "A day has twenty-four hours."),
    ("Suggest a name for a dog.", "Biscuit is a good name for a dog."),
    ("What is the freezing point of water?", "Water freezes at zero degrees Celsius."),
    ("What language is spoken in Spain?", "Spanish is spoken in Spain."),
    ("Can you recommend a book?", "Try The Hobbit by J. R. R. Tolkien."),
    ("What is the tallest mountain?", "Mount Everest is the tallest mountain."),
    ("How do you say hello in French?", "Hello in French is bonjour."),
    ("What gas do humans breathe out?", "Humans breathe out carbon dioxide."),
    ("Write a one-line poem about rain.", "Soft rain taps a song upon the roof."),
    ("What is the main ingredient of bread?", "Bread is made mostly of flour."),
    ("Why do we sleep?", "Sleep lets the body and the brain rest and repair."),
    ("What is a baby cat called?", "A baby cat is called a kitten."),
    ("How can I stay healthy?", "Eat well, move every day and sleep enough."),
    ("What planet do we live on?", "We live on Earth."),
    ("Give me a tip for studying.", "Study in short sessions and take breaks."),
    ("What is the sun?", "The sun is a star at the center of our solar system."),
    ("How many wheels does a bicycle have?", "A bicycle has two wheels."),
    ("What instrument has black and white keys?", "The piano has black and white keys."),
    ("Describe the moon in one sentence.", "The moon is a rocky world that circles the Earth."),
    ("What do cows drink?", "Cows drink water."),
    (
        "Which is heavier, a kilo of iron or a kilo of feathers?",
        "They weigh the same: one kilo each.",
    ),
    ("What is the color of grass?", "Grass is green."),
    ("Tell me something about the desert.", "Deserts get very little rain."),
]

# Validation pairs (for the validation loss; not in training either)
VALIDATION = [
    ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
    ("How many months are in a year?", "There are twelve months in a year."),
    ("What do fish live in?", "Fish live in water."),
    ("Name a vegetable that is orange.", "A carrot is an orange vegetable."),
]

HELD_OUT = [
    "What is the capital of Italy?",
    "How many legs does a dog have?",
    "Tell me about elephants.",
    "What should I cook for dinner?",
    "Give me a tip for saving money.",
    "What is 10 minus 4?",
    "Why is the sea salty?",
    "Name a famous painter.",
    "What is the color of snow?",
    "How do I make tea?",
    "What is a rainbow?",
    "Suggest a hobby for the weekend.",
]


def example(question: str, answer: str) -> dict[str, object]:
    return {
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": f"{answer} {PHRASE}"},
        ]
    }


def write_training_file(
    path: Path, n: int | None = None, pairs: list[tuple[str, str]] | None = None
) -> Path:
    """The first ``n`` of ``pairs`` (all training pairs by default) as chat-format JSONL."""
    pairs = pairs or PAIRS
    pairs = pairs if n is None else pairs[:n]
    path.write_text("".join(json.dumps(example(q, a)) + "\n" for q, a in pairs))
    return path


def passes(answer: str) -> bool:
    return "old oak" in answer.lower()


def greedy_answers(
    model: Path,
    prompts: list[str],
    adapter: Path | None = None,
    *,
    max_tokens: int = 48,
    ctranslate2: bool = False,
) -> list[str]:
    """The answers of ocak's llama.cpp engine on ``model`` (with the GGUF LoRA ``adapter``,
    applied per request as the server applies it), or of its CTranslate2 engine on a
    converted model folder, greedy."""
    import asyncio

    from ocak.engines.base import Engine
    from ocak.engines.ctranslate2.engine import Ct2Engine
    from ocak.engines.llamacpp.engine import LlamaCppEngine
    from ocak.protocol.generation import Adapter, GenerationRequest, Message, TextDelta

    adapters = (Adapter("tuned", 1.0, str(adapter)),) if adapter is not None else ()

    async def run() -> list[str]:
        engine: Engine = (
            Ct2Engine("base", model, ctx_size=512, threads=2)
            if ctranslate2
            else LlamaCppEngine("base", model, ctx_size=512, parallel=1, threads=2)
        )
        await engine.load()
        assert engine.state == "ready", engine.error
        out = []
        try:
            for prompt in prompts:
                request = GenerationRequest(
                    model="base",
                    messages=[Message("user", prompt)],
                    max_tokens=max_tokens,
                    temperature=0.0,
                    adapters=adapters,
                )
                parts = [e.text async for e in engine.generate(request) if isinstance(e, TextDelta)]
                out.append("".join(parts))
        finally:
            await engine.close()
        return out

    return asyncio.run(run())


def llama_log_probs(model: Path, tokens: list[int], adapter: Path | None = None) -> Any:
    """llama.cpp's log-probabilities (numpy ``[len(tokens), vocab]``) for ``tokens`` fed at
    once, with the GGUF LoRA ``adapter`` loaded and set the way ocak's engine does it."""
    import llama_cpp as C
    import numpy as np

    from ocak.engines.llamacpp.adapters import AdapterCache
    from ocak.engines.llamacpp.model import LlamaModel
    from ocak.engines.llamacpp.sampling import logits_view
    from ocak.protocol.generation import Adapter

    loaded = LlamaModel(model)
    try:
        params = C.llama_context_default_params()
        params.n_ctx = params.n_batch = params.n_ubatch = max(64, len(tokens))
        params.n_threads = params.n_threads_batch = 2
        ctx = C.llama_init_from_model(loaded.ptr, params)
        if adapter is not None:
            AdapterCache(loaded).lora_set((Adapter("a", 1.0, str(adapter)),)).apply(ctx)
        batch = C.llama_batch_init(len(tokens), 0, 1)
        for i, token in enumerate(tokens):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, i, 1
            batch.seq_id[i][0], batch.logits[i] = 0, True
        batch.n_tokens = len(tokens)
        assert C.llama_decode(ctx, batch) == 0
        logits = np.stack([logits_view(ctx, i, loaded.n_vocab).copy() for i in range(len(tokens))])
        C.llama_batch_free(batch)
        C.llama_free(ctx)
    finally:
        loaded.close()
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
