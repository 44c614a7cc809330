"""Samplers and local defaults over real HTTP, on the real default model, with the openai
client's ``extra_body`` (how OpenAI's clients send llama-server's sampler fields).

The module's server is started with ``OCAK_SAMPLING_DEFAULTS={"temperature": 0}``, so
"the default applied" is visible as a greedy answer, and "not applied" as a seeded draw,
and with ``OCAK_LOCAL_MAX_TOKENS=8``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from helpers import ServerProcess

pytestmark = pytest.mark.slow

ASK = [{"role": "user", "content": "Tell me a short story about a fox."}]


@pytest.fixture(scope="module")
def oc() -> Iterator[openai.OpenAI]:
    defaults = json.dumps({"temperature": 0})
    server = ServerProcess(env={"OCAK_SAMPLING_DEFAULTS": defaults, "OCAK_LOCAL_MAX_TOKENS": "8"})
    try:
        server.wait_ready()
        yield openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
    finally:
        server.stop()


def say(oc: openai.OpenAI, max_tokens: int = 24, **kw: Any) -> str:
    extra = {k: kw.pop(k) for k in ("top_k", "min_p", "repeat_penalty", "repeat_last_n") if k in kw}
    r = oc.chat.completions.create(
        model="default", messages=ASK, max_tokens=max_tokens, extra_body=extra, **kw
    )
    return r.choices[0].message.content or ""


def test_top_k_1_answers_as_greedy_does(oc: openai.OpenAI) -> None:
    greedy = say(oc, temperature=0)
    assert say(oc, temperature=1.5, seed=5, top_k=1) == greedy
    assert say(oc, temperature=1.5, seed=6, top_k=1) == greedy


def test_seeded_runs_repeat_with_the_new_samplers(oc: openai.OpenAI) -> None:
    kw = {"temperature": 1.2, "top_p": 1.0, "top_k": 50, "min_p": 0.02, "repeat_penalty": 1.2}
    assert say(oc, seed=11, **kw) == say(oc, seed=11, **kw)
    assert len({say(oc, seed=s, **kw) for s in (1, 2, 3)}) > 1


def test_min_p_near_1_leaves_only_the_top_token(oc: openai.OpenAI) -> None:
    greedy = say(oc, temperature=0)
    assert say(oc, temperature=1.5, top_p=1.0, seed=3, min_p=0.999) == greedy


def test_server_default_applies_only_where_the_client_set_nothing(oc: openai.OpenAI) -> None:
    greedy = say(oc, temperature=0)
    assert say(oc) == greedy  # no temperature: the configured default (0) applies
    drawn = {say(oc, temperature=1.0, top_k=0, top_p=1.0, seed=s) for s in (1, 2, 3)}
    assert drawn != {greedy}  # the client's temperature wins over the default


def test_repeat_penalty_makes_greedy_text_repeat_less(oc: openai.OpenAI) -> None:
    ask = [{"role": "user", "content": "Write the word dog forty times."}]

    def text(**extra: Any) -> str:
        r = oc.chat.completions.create(
            model="default", messages=ask, max_tokens=60, temperature=0, extra_body=extra
        )
        return (r.choices[0].message.content or "").lower()

    # Counted in the text, not in words: greedy output may run the dogs together
    # ("dog-fed-dog-fed-...", seen on an AVX-512 machine) where another CPU spaces them.
    plain, penalized = text(), text(repeat_penalty=1.8, repeat_last_n=-1)
    assert penalized.count("dog") < plain.count("dog"), (plain, penalized)


def test_bad_sampler_values_are_a_400_naming_the_field(oc: openai.OpenAI) -> None:
    for field, value in (("top_k", -1), ("min_p", 1.5), ("repeat_penalty", 0)):
        with pytest.raises(openai.BadRequestError) as err:
            say(oc, **{field: value})
        assert field in str(err.value)


def test_a_request_without_max_tokens_stops_at_the_local_default(oc: openai.OpenAI) -> None:
    r = oc.chat.completions.create(model="default", messages=ASK)
    assert r.usage is not None and r.usage.completion_tokens == 8
    assert r.choices[0].finish_reason == "length"
    longer = oc.chat.completions.create(model="default", messages=ASK, max_tokens=12)
    assert longer.usage is not None and longer.usage.completion_tokens == 12
