"""Each model family converts from a tiny random-weight checkpoint, scores like transformers,
and generates through the CTranslate2 engine; families CTranslate2 cannot convert are refused
with a message that points to the GGUF route. Nothing is downloaded."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ct2_helpers import write_tiny_checkpoint
from ocak.engines.ctranslate2.engine import Ct2Engine
from ocak.models.convert import convert
from ocak.models.families import UnsupportedFamily
from ocak.models.hardware import CudaStatus
from ocak.protocol.generation import Finished, GenerationRequest, TextDelta

torch = pytest.importorskip("torch")
ctranslate2 = pytest.importorskip("ctranslate2")

CONVERTIBLE = ["llama", "mistral", "qwen2", "phi3", "gpt_neox", "gpt2", "gptj", "falcon"]
SENTENCE = "<s> hello world the a of and to in is it you that he was"


def hf_log_probs(folder: Path, tokens: list[str]) -> list[float]:
    """Log-probability transformers gives each next token of ``tokens``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = torch.tensor([tokenizer.convert_tokens_to_ids(tokens)])
    with torch.no_grad():
        logits = model(ids).logits[0].float()
    log_probs = torch.log_softmax(logits, dim=-1)
    return [float(log_probs[i, ids[0, i + 1]]) for i in range(len(tokens) - 1)]


def engine_text(path: Path, prompt: str) -> tuple[str, Finished]:
    async def run() -> tuple[str, Finished]:
        engine = Ct2Engine("tiny", path, ctx_size=128, threads=1, device="cpu")
        await engine.load()
        assert engine.state == "ready", engine.error
        pieces: list[str] = []
        finished: Finished | None = None
        request = GenerationRequest(model="tiny", prompt=prompt, max_tokens=6, temperature=0)
        async for event in engine.generate(request):
            if isinstance(event, TextDelta):
                pieces.append(event.text)
            elif isinstance(event, Finished):
                finished = event
        await engine.close()
        assert finished is not None
        return "".join(pieces), finished

    return asyncio.run(run())


@pytest.mark.parametrize("family", CONVERTIBLE)
def test_family_converts_scores_like_transformers_and_generates(
    family: str, tmp_path: Path
) -> None:
    source = write_tiny_checkpoint(tmp_path / "hf", family)
    result = convert(source, tmp_path / "store", quantization="float32", cuda=CudaStatus())
    assert result.metadata["family"] == family
    tokens = SENTENCE.split()
    expected = hf_log_probs(source, tokens)
    generator = ctranslate2.Generator(str(result.path), device="cpu")
    scored = generator.score_batch([tokens])[0].log_probs
    assert len(scored) == len(expected)
    assert scored == pytest.approx(expected, abs=2e-3), family
    # And the engine serves it: the text of CTranslate2's own greedy tokens.
    text, finished = engine_text(result.path, "hello world the")
    assert finished.usage.prompt_tokens == 3
    assert 1 <= finished.usage.completion_tokens <= 6
    greedy = generator.generate_batch(
        [["hello", "world", "the"]],
        max_length=6,
        sampling_topk=1,
        include_prompt_in_result=False,
        end_token="</s>",
    )[0].sequences[0]
    words = [t for t in greedy if t not in ("<s>", "<unk>") and not t.startswith("<extra_id")]
    assert text.split() == words


def test_phi3_with_longrope_scaling_converts_and_scores_like_transformers(
    tmp_path: Path,
) -> None:
    """Phi-3 128k models use LongRoPE. CTranslate2 applies the long factors at every
    length, transformers only past ``original_max_position_embeddings``: compared on a
    sequence longer than that, where both use them (the README notes the difference)."""
    half = 64 // 4 // 2
    tokens = SENTENCE.split()
    original = len(tokens) // 2
    rope = {
        "rope_type": "longrope",
        "rope_theta": 10000.0,
        "long_factor": [1.0 + 0.5 * i for i in range(half)],
        "short_factor": [1.0 + 0.1 * i for i in range(half)],
        "original_max_position_embeddings": original,
    }
    source = write_tiny_checkpoint(
        tmp_path / "hf",
        "phi3",
        rope_parameters=rope,
        max_position_embeddings=8 * original,
        original_max_position_embeddings=original,
    )
    result = convert(source, tmp_path / "store", quantization="float32", cuda=CudaStatus())
    generator = ctranslate2.Generator(str(result.path), device="cpu")
    scored = generator.score_batch([tokens])[0].log_probs
    assert scored == pytest.approx(hf_log_probs(source, tokens), abs=2e-3)


@pytest.mark.parametrize("family", ["mpt", "gpt_neo"])
def test_family_without_a_converter_is_refused_with_the_gguf_route(
    family: str, tmp_path: Path
) -> None:
    source = write_tiny_checkpoint(tmp_path / "hf", family)
    with pytest.raises(UnsupportedFamily) as info:
        convert(source, tmp_path / "store", quantization="int8", cuda=CudaStatus())
    message = info.value.message
    assert f"'{family}'" in message
    assert "GGUF" in message and "ocak serve --model" in message
    assert not (tmp_path / "store" / "hf-int8").exists()
