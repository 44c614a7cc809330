"""What a target receives: the alias's params fill only what the client left unset, for
local and remote targets alike; the server's max_tokens cap travels upstream; the
gateway's engine-shaped calls build OpenAI chat payloads."""

from __future__ import annotations

from typing import Any

import pytest

from gateway_stubs import remote_target
from ocak.gateway.generation import chat_payload
from ocak.gateway.router import LocalTarget
from ocak.protocol.generation import Constraint, GenerationRequest, Message
from ocak.protocol.openai import ChatCompletionRequest, CompletionRequest
from ocak.providers.errors import TargetCannot
from ocak.serving.service import local_body, remote_payload, target_params

LOCAL = LocalTarget(
    name="local/default", params={"temperature": 0, "max_tokens": 12}, engine="default"
)
REMOTE = remote_target("groq/llama", "llama", params={"temperature": 0.3, "top_p": 0.9})


def chat(**fields: Any) -> ChatCompletionRequest:
    base: dict[str, Any] = {"model": "alias", "messages": [{"role": "user", "content": "hi"}]}
    return ChatCompletionRequest.model_validate({**base, **fields})


def test_alias_params_fill_only_unset_fields() -> None:
    assert target_params(chat(), LOCAL) == {"temperature": 0, "max_tokens": 12}
    assert target_params(chat(temperature=1.0), LOCAL) == {"max_tokens": 12}
    # A field the client set to its default value is still the client's.
    assert target_params(chat(temperature=1.0, max_tokens=16), LOCAL) == {}


def test_a_local_target_gets_its_engine_id_and_the_params() -> None:
    body = local_body(chat(top_p=0.5), LOCAL)
    assert (body.model, body.temperature, body.max_tokens, body.top_p) == ("default", 0, 12, 0.5)
    same = local_body(chat(temperature=0.7, max_tokens=3), LOCAL)
    assert (same.model, same.temperature, same.max_tokens) == ("default", 0.7, 3)
    text = local_body(CompletionRequest(model="alias", prompt="a"), LOCAL)
    assert isinstance(text, CompletionRequest) and text.max_tokens == 12  # unset: the alias


def test_a_remote_target_gets_the_clients_json_with_the_params_and_the_cap() -> None:
    raw = {"model": "alias", "messages": [{"role": "user", "content": "hi"}], "top_p": 1}
    body = chat(top_p=1)
    body.max_tokens = 64  # the server's --max-tokens-limit, applied at admission
    payload = remote_payload(raw, body, REMOTE)
    assert payload["temperature"] == 0.3 and payload["top_p"] == 1  # the client's top_p
    assert payload["max_tokens"] == 64 and raw.get("max_tokens") is None  # raw untouched
    capped = remote_payload({**raw, "max_completion_tokens": 5}, body, REMOTE)
    assert "max_tokens" not in capped


def test_engine_shaped_requests_become_openai_chat_payloads() -> None:
    request = GenerationRequest(
        model="m",
        messages=[Message("user", "hi", name="ada")],
        max_tokens=8,
        temperature=0.2,
        stop=["\n"],
        constraint=Constraint(kind="json", schema={"type": "object"}),
    )
    payload = chat_payload(request)
    assert payload["messages"] == [{"role": "user", "content": "hi", "name": "ada"}]
    assert (payload["max_tokens"], payload["temperature"], payload["stop"]) == (8, 0.2, ["\n"])
    assert payload["response_format"]["json_schema"]["schema"] == {"type": "object"}
    assert payload["stream"] is True
    with pytest.raises(TargetCannot):
        chat_payload(GenerationRequest(model="m", prompt="raw text"))
    with pytest.raises(TargetCannot):
        chat_payload(
            GenerationRequest(
                model="m", messages=[Message("user", "x")], constraint=Constraint(kind="lark")
            )
        )


def test_engine_shaped_requests_get_the_alias_params_where_they_kept_the_default() -> None:
    """Character turns and summaries: the same rule for local and remote targets."""
    from ocak.serving.service import generation_params

    request = GenerationRequest(model="alias", messages=[Message("user", "hi")], temperature=0.8)
    target = remote_target("t", params={"temperature": 0.1, "top_p": 0.5, "input": {"x": 1}})
    mine = generation_params(request, target)
    assert (mine.temperature, mine.top_p) == (0.8, 0.5)  # the caller's temperature stays
    assert generation_params(request, remote_target("t")) is request
    payload = chat_payload(mine)
    assert payload["top_p"] == 0.5 and payload["temperature"] == 0.8
