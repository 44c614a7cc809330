"""``/v1/completions`` end to end, and text integrity while streaming."""

from __future__ import annotations

import openai


def test_completion_answers(client: openai.OpenAI) -> None:
    r = client.completions.create(model="default", prompt="The capital of France is", max_tokens=8)
    assert r.choices[0].text
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage is not None and r.usage.completion_tokens <= 8


def test_completion_default_max_tokens_is_16(client: openai.OpenAI) -> None:
    r = client.completions.create(model="default", prompt="Once upon a time", temperature=0)
    assert r.usage is not None and r.usage.completion_tokens <= 16


def test_completion_stream_matches_whole(client: openai.OpenAI) -> None:
    kw = {"model": "default", "prompt": "One, two, three,", "max_tokens": 20, "temperature": 0}
    whole = client.completions.create(**kw)  # type: ignore[call-overload]
    chunks = list(client.completions.create(**kw, stream=True))  # type: ignore[call-overload]
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason


def _streamed_pieces(client: openai.OpenAI, prompt: str) -> tuple[list[str], str]:
    kw = {"model": "default", "prompt": prompt, "max_tokens": 30, "temperature": 0}
    pieces = [c.choices[0].text for c in client.completions.create(**kw, stream=True)]  # type: ignore[call-overload]
    whole = client.completions.create(**kw).choices[0].text  # type: ignore[call-overload]
    return pieces, whole


def test_emoji_are_never_split_across_chunks(client: openai.OpenAI) -> None:
    pieces, whole = _streamed_pieces(client, "🙂🎉🙂🎉🙂🎉🙂🎉🙂🎉")
    assert any(ord(ch) > 0xFFFF for ch in whole), whole  # the model did write emoji
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == whole


def test_turkish_text_streams_intact(client: openai.OpenAI) -> None:
    prompt = "İstanbul'da çay içtik. İstanbul'da çay içtik. İstanbul'da çay içtik. İstanbul'da"
    pieces, whole = _streamed_pieces(client, prompt)
    assert any(ch in whole for ch in "çğıİöşü"), whole
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == whole
