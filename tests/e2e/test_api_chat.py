"""End to end over HTTP with the official openai client, on the real default model."""

from __future__ import annotations

import openai
import pytest

from helpers import BUNDLED_EMBEDDING, BUNDLED_SPEECH, ServerProcess

MSG = [{"role": "user", "content": "Name three colors."}]


def test_chat_completion_answers_with_usage(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="default", messages=MSG, max_tokens=24)
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert r.usage is not None
    assert r.usage.prompt_tokens > 5
    assert 0 < r.usage.completion_tokens <= 24
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.model == "default"
    assert r.id.startswith("chatcmpl-")


def test_streaming_matches_non_streaming_and_reports_usage(client: openai.OpenAI) -> None:
    kwargs = {"model": "default", "messages": MSG, "max_tokens": 32, "temperature": 0}
    whole = client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    chunks = list(
        client.chat.completions.create(
            **kwargs, stream=True, stream_options={"include_usage": True}
        )  # type: ignore[call-overload]
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == whole.choices[0].finish_reason
    assert all(f is None for f in finishes[:-1])
    assert chunks[0].choices[0].delta.role == "assistant"
    # The usage chunk comes last, with no choices, as OpenAI sends it.
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]


def test_stream_without_include_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(model="default", messages=MSG, max_tokens=8, stream=True)
    )
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


def test_temperature_zero_is_greedy_and_repeatable(client: openai.OpenAI) -> None:
    texts = {
        client.chat.completions.create(model="default", messages=MSG, max_tokens=24, temperature=0)
        .choices[0]
        .message.content
        for _ in range(3)
    }
    assert len(texts) == 1


def test_same_seed_same_text_different_seed_different_text(client: openai.OpenAI) -> None:
    def sample(seed: int) -> str | None:
        return (
            client.chat.completions.create(
                model="default",
                messages=[{"role": "user", "content": "Tell me a short story."}],
                max_tokens=40,
                temperature=1.0,
                seed=seed,
            )
            .choices[0]
            .message.content
        )

    assert sample(1234) == sample(1234)
    assert len({sample(1), sample(2), sample(3)}) > 1


def test_stop_sequence_ends_the_answer_before_it(client: openai.OpenAI) -> None:
    base = (
        client.chat.completions.create(model="default", messages=MSG, max_tokens=40, temperature=0)
        .choices[0]
        .message.content
    )
    assert base and len(base) > 12
    stop = base[8:12]
    r = client.chat.completions.create(
        model="default", messages=MSG, max_tokens=40, temperature=0, stop=[stop, "zzzz"]
    )
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content == base[: base.index(stop)]


def test_max_tokens_gives_finish_reason_length(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "Write a long essay about the ocean."}],
        max_tokens=5,
        temperature=0,
    )
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None and r.usage.completion_tokens == 5
    # max_completion_tokens, the newer name, means the same.
    r2 = client.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "Write a long essay about the ocean."}],
        max_completion_tokens=5,
        temperature=0,
    )
    assert r2.choices[0].message.content == r.choices[0].message.content


def test_content_as_list_of_text_parts(client: openai.OpenAI) -> None:
    parts = [{"type": "text", "text": "Name three "}, {"type": "text", "text": "colors."}]
    a = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": parts}], max_tokens=16, temperature=0
    )
    b = client.chat.completions.create(model="default", messages=MSG, max_tokens=16, temperature=0)
    assert a.choices[0].message.content == b.choices[0].message.content


def test_system_and_assistant_turns_are_used(client: openai.OpenAI) -> None:
    history = [
        {"role": "system", "content": "You are a pirate."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Arr, ahoy matey!"},
        {"role": "user", "content": "Who are you?"},
    ]
    r = client.chat.completions.create(model="default", messages=history, max_tokens=8)  # type: ignore[arg-type]
    short = client.chat.completions.create(
        model="default",
        messages=history[-1:],
        max_tokens=8,  # type: ignore[arg-type]
    )
    assert r.usage is not None and short.usage is not None
    # The earlier turns are in the prompt (the default system prompt is replaced).
    assert r.usage.prompt_tokens > short.usage.prompt_tokens


def test_models_list_and_get(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    # the chat model, then the speech models, then the embedder
    assert ids == ["default", *BUNDLED_SPEECH, *BUNDLED_EMBEDDING]
    m = client.models.retrieve("default")
    assert m.id == "default"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_unknown_fields_are_ignored(server: ServerProcess) -> None:
    import httpx

    r = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": "default", "messages": MSG, "max_tokens": 4, "some_future_field": {"x": 1}},
        timeout=60,
    )
    assert r.status_code == 200, r.text
