"""Anthropic's Messages API on a real, key-protected ``ocak serve`` with the real default
model, through the real ``anthropic`` SDK: create, stream (text_stream and the final
message), a forced tool call and the turn after its result, stop sequences, token
counting that matches the usage the model reports, keys sent as ``x-api-key``, and the
usage records.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest

from helpers import ServerProcess
from keys_helpers import create_key, usage_rows

pytestmark = pytest.mark.slow

HELLO: list[Any] = [{"role": "user", "content": "Say hello to Ada."}]
WEATHER: Any = {
    "name": "get_weather",
    "description": "The current weather of a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 40}},
        "required": ["city"],
        "additionalProperties": False,
    },
}
# SDK 2.x dropped the sampling arguments; ocak honours them from the body.
GREEDY = {"temperature": 0}
ASK: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]


class Keyed:
    def __init__(self, server: ServerProcess, data: Path, key: str) -> None:
        self.server, self.data, self.key = server, data, key

    def client(self, key: str | None = None) -> anthropic.Anthropic:
        return anthropic.Anthropic(
            base_url=self.server.url, api_key=key or self.key, max_retries=0, timeout=60
        )


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keyed]:
    """One server for the module, with a key made by ``ocak keys create``."""
    data = tmp_path_factory.mktemp("ocak-anthropic")
    key = create_key(data, "main")
    proc = ServerProcess(
        ["--parallel", "2", "--ctx-size", "1024"], env={"OCAK_DATA_DIR": str(data)}
    )
    try:
        proc.wait_ready()
        yield Keyed(proc, data, key)
    finally:
        proc.stop()


def test_create_answers_text_and_the_usage_record_matches(keyed: Keyed) -> None:
    raw = keyed.client().messages.with_raw_response.create(
        model="default", max_tokens=12, messages=HELLO, extra_body=GREEDY
    )
    reply = raw.parse()
    assert reply.type == "message" and reply.role == "assistant" and reply.id.startswith("msg_")
    assert reply.content[0].type == "text" and reply.content[0].text.strip()
    assert reply.stop_reason in ("end_turn", "max_tokens")
    assert 0 < reply.usage.output_tokens <= 12 and reply.usage.input_tokens > 5
    (row,) = usage_rows(keyed.data, request_id=raw.headers["x-request-id"])
    assert row["key_name"] == "main" and row["model"] == "default"
    assert row["locality"] == "local" and row["status"] == "completed"
    assert row["prompt_tokens"] == reply.usage.input_tokens
    assert row["completion_tokens"] == reply.usage.output_tokens


def test_stream_gives_the_text_as_it_comes_and_the_same_final_message(keyed: Keyed) -> None:
    client = keyed.client()
    whole = client.messages.create(
        model="default", max_tokens=16, messages=HELLO, extra_body=GREEDY
    )
    with client.messages.stream(
        model="default", max_tokens=16, messages=HELLO, extra_body=GREEDY
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
        request_id = stream.response.headers["x-request-id"]
    assert len(pieces) > 1  # streamed, not sent whole
    assert "".join(pieces) == final.content[0].text == whole.content[0].text  # type: ignore[union-attr]
    assert final.usage.input_tokens == whole.usage.input_tokens
    assert final.usage.output_tokens == whole.usage.output_tokens
    (row,) = usage_rows(keyed.data, request_id=request_id)
    assert row["stream"] == 1 and row["completion_tokens"] == final.usage.output_tokens


def test_a_forced_tool_call_then_its_result(keyed: Keyed) -> None:
    client = keyed.client()
    choice: Any = {"type": "tool", "name": "get_weather"}
    reply = client.messages.create(
        model="default", max_tokens=60, messages=ASK, tools=[WEATHER], tool_choice=choice
    )
    assert reply.stop_reason == "tool_use"
    (call,) = [b for b in reply.content if b.type == "tool_use"]
    assert call.name == "get_weather" and call.id.startswith("toolu_")
    assert isinstance(call.input, dict) and set(call.input) == {"city"}
    assert isinstance(call.input["city"], str)

    # Streamed, the same call arrives as input_json_delta pieces the SDK puts together.
    with client.messages.stream(
        model="default", max_tokens=60, messages=ASK, tools=[WEATHER], tool_choice=choice
    ) as stream:
        streamed = stream.get_final_message()
    (scall,) = [b for b in streamed.content if b.type == "tool_use"]
    assert isinstance(scall.input, dict) and set(scall.input) == {"city"}

    follow = [
        *ASK,
        {"role": "assistant", "content": [call.model_dump()]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "Sunny, 24 C."}],
        },
    ]
    answer = client.messages.create(
        model="default",
        max_tokens=30,
        messages=follow,
        tools=[WEATHER],
        tool_choice={"type": "none"},  # the 135M model would call again if it may
        extra_body=GREEDY,
    )
    assert answer.content[0].type == "text" and answer.content[0].text.strip()
    assert answer.stop_reason in ("end_turn", "max_tokens")


def test_a_stop_sequence_cuts_the_answer_where_it_appears(keyed: Keyed) -> None:
    client = keyed.client()
    prompt: Any = [{"role": "user", "content": "Count from one to ten in words."}]
    full = client.messages.create(
        model="default", max_tokens=40, messages=prompt, extra_body=GREEDY
    )
    text = full.content[0].text  # type: ignore[union-attr]
    words = text.split()
    assert len(words) > 4, text
    stop = words[len(words) // 2]
    cut = client.messages.create(
        model="default", max_tokens=40, messages=prompt, extra_body=GREEDY, stop_sequences=[stop]
    )
    assert cut.content[0].text == text[: text.index(stop)]  # type: ignore[union-attr]
    assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == stop
    assert cut.usage.output_tokens < full.usage.output_tokens


def test_count_tokens_matches_the_input_tokens_of_a_reply(keyed: Keyed) -> None:
    client = keyed.client()
    system = "You are terse."
    counted = client.messages.count_tokens(model="default", messages=HELLO, system=system)
    reply = client.messages.create(model="default", max_tokens=1, messages=HELLO, system=system)
    assert counted.input_tokens == reply.usage.input_tokens
    with_tools = client.messages.count_tokens(
        model="default", messages=ASK, tools=[WEATHER], tool_choice={"type": "auto"}
    )
    tooled = client.messages.create(model="default", max_tokens=1, messages=ASK, tools=[WEATHER])
    assert with_tools.input_tokens == tooled.usage.input_tokens


def test_keys_and_errors_come_back_as_the_sdks_exceptions(keyed: Keyed) -> None:
    with pytest.raises(anthropic.AuthenticationError) as info:
        keyed.client("ocak-wrong").messages.create(model="default", max_tokens=5, messages=HELLO)
    assert info.value.status_code == 401
    assert json.loads(info.value.response.text)["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.NotFoundError):
        keyed.client().messages.create(model="no-such-model", max_tokens=5, messages=HELLO)
    with pytest.raises(anthropic.BadRequestError) as bad:
        keyed.client().messages.create(
            model="default",
            max_tokens=5,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {
                                "type": "base64",
                                "media_type": "image/png",
                                "data": "iVBORw0KGgo=",
                            },
                        },
                    ],
                }
            ],
        )
    assert "messages.[0].content.[0]" in bad.value.message
