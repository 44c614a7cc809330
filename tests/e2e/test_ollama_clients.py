"""Ollama's API on a real ``ocak serve`` (the default model), driven by the real clients:
the ``ollama`` Python library and LangChain's ``ChatOllama``, with an API key sent the
way those clients send custom headers; usage recorded as for OpenAI's routes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest
from langchain_ollama import ChatOllama

from helpers import ServerProcess, active, wait_until
from keys_helpers import create_key, usage_rows

pytestmark = pytest.mark.slow

ASK = [{"role": "user", "content": "Say hello."}]
QUICK = {"num_predict": 12, "temperature": 0, "seed": 1}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
        },
    },
}
FORCE = [
    {"role": "system", "content": "Always answer by calling a tool."},
    {"role": "user", "content": "What is the weather like in Istanbul today?"},
]


class Keyed:
    def __init__(self, server: ServerProcess, data: Path, key: str) -> None:
        self.server, self.data, self.key = server, data, key
        self.headers = {"Authorization": f"Bearer {key}"}

    def client(self) -> ollama.Client:
        return ollama.Client(host=self.server.url, headers=self.headers, timeout=120)


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keyed]:
    data = tmp_path_factory.mktemp("ocak-ollama")
    key = create_key(data, "ollama")
    proc = ServerProcess(["--ctx-size", "1024"], env={"OCAK_DATA_DIR": str(data)})
    try:
        proc.wait_ready()
        yield Keyed(proc, data, key)
    finally:
        proc.stop()


def test_chat_streaming_and_not_and_generate(keyed: Keyed) -> None:
    client = keyed.client()
    reply = client.chat(model="default", messages=ASK, options=QUICK)
    assert reply.message.role == "assistant" and reply.message.content
    assert reply.done and reply.done_reason in ("stop", "length")
    assert reply.eval_count and reply.prompt_eval_count and reply.total_duration
    parts = list(client.chat(model="default", messages=ASK, options=QUICK, stream=True))
    assert len(parts) > 2 and parts[-1].done and not any(p.done for p in parts[:-1])
    streamed = "".join(p.message.content or "" for p in parts)
    assert streamed == reply.message.content  # seeded at temperature 0: the same answer
    gen = client.generate(model="default", prompt="The sky is", options=QUICK)
    assert gen.response and gen.done and gen.eval_count


def test_list_show_ps_and_version(keyed: Keyed) -> None:
    client = keyed.client()
    names = [m.model for m in client.list().models]
    assert "default" in names
    shown = client.show("default")
    assert shown.details is not None and shown.details.format == "gguf"
    assert shown.details.quantization_level == "Q4_1"
    assert shown.modelinfo is not None and 1024 in shown.modelinfo.values()
    assert shown.capabilities is not None and "tools" in shown.capabilities
    loaded = client.ps().models
    assert [m.model for m in loaded] == ["default"] and loaded[0].expires_at is not None
    r = httpx.get(f"{keyed.server.url}/api/version", headers=keyed.headers, timeout=10)
    assert r.json()["version"]


def test_a_tool_call_comes_back_with_object_arguments(keyed: Keyed) -> None:
    client = keyed.client()
    reply = client.chat(
        model="default",
        messages=FORCE,
        tools=[WEATHER],
        options={"temperature": 0, "seed": 3, "tool_choice": "required"},
    )
    calls = reply.message.tool_calls
    assert calls, reply.message.content
    assert calls[0].function.name == "get_weather"
    assert isinstance(calls[0].function.arguments["city"], str)


def test_format_as_a_json_schema_gives_valid_json_within_num_predict(keyed: Keyed) -> None:
    """``format`` with a schema whose string is unbounded: at temperature 1 and a small
    num_predict, every answer is still whole JSON valid against it (closed in time)."""
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    client = keyed.client()
    for seed in range(3):
        reply = client.chat(
            model="default",
            messages=[{"role": "user", "content": "Describe a person as JSON."}],
            format=schema,
            options={"num_predict": 24, "temperature": 1, "seed": seed},
        )
        answer = json.loads(reply.message.content or "")
        assert isinstance(answer["name"], str) and isinstance(answer["age"], int), answer
        assert reply.eval_count is not None and reply.eval_count <= 24


def test_langchain_chat_ollama_invoke_stream_and_tools(keyed: Keyed) -> None:
    llm = ChatOllama(
        base_url=keyed.server.url,
        model="default",
        temperature=0,
        seed=1,
        num_predict=12,
        client_kwargs={"headers": keyed.headers},
    )
    answer = llm.invoke("Say hello.")
    assert isinstance(answer.content, str) and answer.content
    assert answer.usage_metadata is not None and answer.usage_metadata["output_tokens"] > 0
    chunks = list(llm.stream("Say hello."))
    assert len(chunks) > 2 and "".join(str(c.content) for c in chunks) == answer.content
    tooled = ChatOllama(
        base_url=keyed.server.url,
        model="default",
        temperature=0,
        seed=3,
        client_kwargs={"headers": keyed.headers},
    ).bind_tools([WEATHER], options={"temperature": 0, "seed": 3, "tool_choice": "get_weather"})
    called = tooled.invoke([("system", FORCE[0]["content"]), ("user", FORCE[1]["content"])])
    assert called.tool_calls, called.content
    assert called.tool_calls[0]["name"] == "get_weather"


def test_without_the_key_it_is_401_in_ollamas_shape_and_usage_is_recorded(
    keyed: Keyed,
) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        ollama.Client(host=keyed.server.url).chat(model="default", messages=ASK)
    assert info.value.status_code == 401 and "API key" in info.value.error
    r = httpx.post(
        f"{keyed.server.url}/api/chat",
        json={"model": "default", "messages": ASK, "stream": False, "options": QUICK},
        headers={**keyed.headers, "x-request-id": "ollama-usage"},
        timeout=60,
    )
    body: dict[str, Any] = r.json()
    assert r.headers["x-ocak-locality"] == "local"
    assert wait_until(lambda: usage_rows(keyed.data, request_id="ollama-usage"), timeout=30)
    (row,) = usage_rows(keyed.data, request_id="ollama-usage")
    assert row["prompt_tokens"] == body["prompt_eval_count"]
    assert row["completion_tokens"] == body["eval_count"]


def test_a_client_that_leaves_a_stream_stops_its_generation(keyed: Keyed) -> None:
    body = {"model": "default", "messages": [{"role": "user", "content": "Write a long story."}],
            "options": {"num_predict": 900, "temperature": 1, "seed": 5}}  # fmt: skip
    with httpx.stream(
        "POST", f"{keyed.server.url}/api/chat", json=body, headers=keyed.headers, timeout=60
    ) as r:
        first = next(r.iter_lines())
        assert json.loads(first)["done"] is False
    assert wait_until(lambda: active(keyed.server) == 0, timeout=10)
