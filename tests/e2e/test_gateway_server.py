"""The gateway end to end: a real ``ocak serve --config`` in front of scriptable upstreams
(OpenAI-shaped and Replicate-shaped stubs), a second real ocak on another port, and its own
local model, all over HTTP on loopback.

One gateway server serves the module; each test scripts the stubs it uses and gives its
targets their own upstream model names, so breakers of different tests never meet.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway_stubs import (
    TOKENS,
    OpenAIStub,
    ReplicateStub,
    cut,
    echo_auth,
    hang,
    ok,
    status,
)
from helpers import ServerProcess, free_port
from keys_helpers import create_key, usage_rows

KEY_A = "sk-gw-A-" + secrets.token_hex(16)
KEY_B = "sk-gw-B-" + secrets.token_hex(16)
KEY_R = "r8_gw_" + secrets.token_hex(16)
MSG: list[dict[str, Any]] = [{"role": "user", "content": "Say hi."}]
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "x-vendor": {"keep": [1, 2]}}},
                "required": ["city"],
            },
            "strict": True,
        },
    }
]

CONFIG = """\
model: [default]
parallel: 2
ctx_size: 512
max_queue: 8
routing:
  retries: 1
  backoff: 0.05
  backoff_max: 0.1
  retry_after_max: 3
  breaker_failures: 2
  breaker_cooldown: 1.5
  timeouts: {{connect: 2, first_token: 20, total: 60}}
providers:
  a: {{type: openai, preset: groq, base_url: "{a}/v1", api_key_env: OCAK_TEST_KEY_A}}
  b: {{type: openai, preset: deepinfra, base_url: "{b}/v1", api_key_env: OCAK_TEST_KEY_B}}
  dead: {{type: openai, preset: together, base_url: "{dead}/v1", api_key_env: OCAK_TEST_KEY_A}}
  unset: {{type: openai, preset: openai, api_key_env: OCAK_TEST_KEY_UNSET}}
  box: {{type: openai, preset: ocak, base_url: "{box}/v1"}}
  pretender: {{type: openai, preset: ocak, base_url: "{pretender}/v1"}}
  rep: {{type: replicate, base_url: "{rep}/v1", api_key_env: OCAK_TEST_KEY_R}}
models:
  plain: {{targets: [{{provider: a, model: plain}}]}}
  translated: {{targets: [{{provider: b, model: tr}}]}}
  fallback: {{targets: [{{provider: a, model: fb, retries: 0}}, {{provider: b, model: fb}}]}}
  offline:
    targets:
      - {{provider: unset, model: gpt-4o}}
      - {{provider: dead, model: x, retries: 0}}
      - {{local: default, params: {{max_tokens: 3}}}}
  retry: {{targets: [{{provider: a, model: retry, retries: 2}}]}}
  auth: {{targets: [{{provider: a, model: auth}}, {{provider: b, model: auth}}]}}
  hang:
    targets:
      - {{provider: a, model: hang, timeouts: {{first_token: 1}}}}
      - {{provider: b, model: hang}}
  cut: {{targets: [{{provider: a, model: cut}}, {{provider: b, model: cut}}]}}
  breaker: {{targets: [{{provider: a, model: brk, retries: 0}}, {{provider: b, model: brk}}]}}
  balanced:
    targets:
      - {{provider: a, model: lb, rank: 0, weight: 3}}
      - {{provider: b, model: lb, rank: 0, weight: 1}}
  mixed: {{targets: [{{provider: a, model: mixed}}, {{local: default, params: {{max_tokens: 3}}}}]}}
  private:
    locality: local
    targets: [{{provider: box, model: default, params: {{max_tokens: 3}}}}, {{local: default}}]
  boxed: {{targets: [{{provider: box, model: default, params: {{max_tokens: 3}}}}]}}
  pretend: {{targets: [{{provider: pretender, model: default}}]}}
  rep: {{targets: [{{provider: rep, model: meta/llama}}]}}
  rep-tools: {{targets: [{{provider: rep, model: meta/llama}}, {{provider: a, model: rt}}]}}
"""


@dataclass
class Gateway:
    server: ServerProcess
    data: Path
    a: OpenAIStub
    b: OpenAIStub
    pretender: OpenAIStub
    rep: ReplicateStub
    box: ServerProcess
    main_key: str
    local_key: str

    def http(self, key: str | None = None, **headers: str) -> httpx.Client:
        auth = {"authorization": f"Bearer {key or self.main_key}"}
        return httpx.Client(base_url=self.server.url, headers={**auth, **headers}, timeout=60)

    def client(self, key: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.server.url}/v1", api_key=key or self.main_key, max_retries=0
        )


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    stubs = [OpenAIStub().start() for _ in range(3)]
    rep = ReplicateStub().start()
    box = ServerProcess(
        ["--parallel", "2", "--ctx-size", "512"],
        env={"OCAK_DATA_DIR": str(tmp_path_factory.mktemp("box"))},
    )
    data = tmp_path_factory.mktemp("gateway")
    main_key = create_key(data, "main")
    local_key = create_key(data, "local-only", "--locality", "local")
    config = data / "ocak.yaml"
    config.write_text(
        CONFIG.format(
            a=stubs[0].url,
            b=stubs[1].url,
            pretender=stubs[2].url,
            rep=rep.url,
            box=box.url,
            dead=f"http://127.0.0.1:{free_port()}",
        )
    )
    env = {
        "OCAK_DATA_DIR": str(data),
        "OCAK_TEST_KEY_A": KEY_A,
        "OCAK_TEST_KEY_B": KEY_B,
        "OCAK_TEST_KEY_R": KEY_R,
    }
    server = ServerProcess(["--config", str(config)], env=env, log_path=data / "server.log")
    try:
        box.wait_ready()
        server.wait_ready()
        yield Gateway(server, data, stubs[0], stubs[1], stubs[2], rep, box, main_key, local_key)
    finally:
        server.stop()
        box.stop()
        for s in (*stubs, rep):
            s.stop()


@pytest.fixture(autouse=True)
def _reset(gw: Gateway) -> None:
    for stub in (gw.a, gw.b, gw.pretender, gw.rep):
        stub.reset()


def data_lines(text: str) -> list[str]:
    return [line[6:] for line in text.split("\n") if line.startswith("data: ")]


def chat(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": MSG, **extra}


# -- passthrough ------------------------------------------------------------------------


def test_a_remote_answer_passes_through_with_the_two_headers(gw: Gateway) -> None:
    with gw.http() as http:
        r = http.post("/v1/chat/completions", json=chat("plain"))
    assert r.status_code == 200, r.text
    assert r.headers["x-ocak-backend"] == "a/plain"
    assert r.headers["x-ocak-locality"] == "remote"
    body = r.json()
    assert body["x_stub"] == {"unknown": True}  # fields ocak does not know are kept
    assert body["choices"][0]["message"]["content"] == "".join(TOKENS)
    sent = gw.a.posts()[0]
    assert sent.headers["authorization"] == f"Bearer {KEY_A}"
    assert sent.body is not None and sent.body["model"] == "plain"


def test_a_stream_is_the_upstreams_chunks_exactly(gw: Gateway) -> None:
    with (
        gw.http() as http,
        http.stream("POST", "/v1/chat/completions", json=chat("plain", stream=True)) as r,
    ):
        assert r.headers["x-ocak-backend"] == "a/plain"
        assert r.headers["x-ocak-locality"] == "remote"
        assert r.headers["content-type"].startswith("text/event-stream")
        text = r.read().decode()
    sent = gw.a.posts()[0].body
    assert sent is not None
    assert sent["stream_options"] == {"include_usage": True}  # ocak asks, for its records
    upstream = [line.decode() for line in gw.a.stream_lines(sent, ok())]
    # ... and drops the usage chunk the client did not ask for; every other byte is the same
    assert data_lines(text) == [*upstream[:-1], "[DONE]"]
    assert json.loads(upstream[-1])["usage"] is not None


def test_a_stream_with_usage_asked_for_keeps_it(gw: Gateway) -> None:
    body = chat("plain", stream=True, stream_options={"include_usage": True})
    with gw.http() as http:
        text = http.post("/v1/chat/completions", json=body).text
    sent = gw.a.posts()[0].body
    assert sent is not None
    assert data_lines(text) == [*(x.decode() for x in gw.a.stream_lines(sent, ok())), "[DONE]"]


def test_the_openai_client_receives_exactly_the_upstreams_tokens(gw: Gateway) -> None:
    stream = gw.client().chat.completions.create(model="plain", messages=MSG, stream=True)  # type: ignore[arg-type]
    pieces = [c.choices[0].delta.content for c in stream if c.choices]
    assert [p for p in pieces if p] == TOKENS


def test_parameters_are_translated_per_provider(gw: Gateway) -> None:
    messages = [
        {"role": "system", "content": "Be brief.", "name": "rules"},
        {"role": "user", "content": "hi", "name": "ayse"},
    ]
    with gw.http() as http:
        http.post(
            "/v1/chat/completions", json={"model": "plain", "messages": messages, "max_tokens": 7}
        )
        http.post(
            "/v1/chat/completions",
            json={"model": "translated", "messages": messages, "max_completion_tokens": 9},
        )
    groq = gw.a.posts()[0].body
    assert groq is not None
    assert [m.get("name") for m in groq["messages"]] == [None, None]  # Groq refuses `name`
    assert groq["max_completion_tokens"] == 7 and "max_tokens" not in groq
    deepinfra = gw.b.posts()[0].body
    assert deepinfra is not None
    assert deepinfra["max_tokens"] == 9 and "max_completion_tokens" not in deepinfra
    assert [m.get("name") for m in deepinfra["messages"]] == ["rules", "ayse"]


def test_tools_pass_through_unchanged_both_ways(gw: Gateway) -> None:
    body = chat(
        "plain",
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
        logprobs=True,  # not something local engines take: remote targets get it anyway
    )
    with gw.http() as http:
        whole = http.post("/v1/chat/completions", json=body).json()
        text = http.post("/v1/chat/completions", json={**body, "stream": True}).text
    sent = gw.a.posts()[0].body
    assert sent is not None
    for field in ("tools", "tool_choice", "parallel_tool_calls", "logprobs"):
        assert sent[field] == body[field]
    call = whole["choices"][0]["message"]["tool_calls"][0]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Ankara"}'}
    streamed = gw.a.posts()[1].body
    assert streamed is not None
    assert data_lines(text)[:-1] == [x.decode() for x in gw.a.stream_lines(streamed, ok())][:-1]


# -- fallback, retries, timeouts, breaker, balancing ------------------------------------


def test_a_5xx_falls_back_to_the_next_target(gw: Gateway) -> None:
    gw.a.push(status(500))
    with gw.http() as http:
        r = http.post("/v1/chat/completions", json=chat("fallback", stream=True))
    assert r.status_code == 200
    assert r.headers["x-ocak-backend"] == "b/fb"
    assert (len(gw.a.posts()), len(gw.b.posts())) == (1, 1)
    assert data_lines(r.text)[-1] == "[DONE]"


def test_unreachable_and_keyless_targets_fall_back_to_the_local_model(gw: Gateway) -> None:
    with gw.http() as http:
        r = http.post("/v1/chat/completions", json=chat("offline"))
        assert r.status_code == 200, r.text
        assert r.headers["x-ocak-backend"] == "local/default"
        assert r.headers["x-ocak-locality"] == "local"
        assert r.json()["usage"]["completion_tokens"] <= 3  # the target's params apply
        with http.stream("POST", "/v1/chat/completions", json=chat("offline", stream=True)) as s:
            assert s.headers["x-ocak-backend"] == "local/default"
            assert s.headers["x-ocak-locality"] == "local"
            assert data_lines(s.read().decode())[-1] == "[DONE]"
        card = http.get("/v1/models/offline").json()
    assert card["meta"]["targets"] == ["dead/x", "local/default"]
    assert card["meta"]["skipped"] == ["unset/gpt-4o"]  # its key variable is not set


def test_retries_wait_as_retry_after_says(gw: Gateway) -> None:
    gw.a.push(status(429, headers={"Retry-After": "1"}), status(503))
    with gw.http() as http:
        r = http.post("/v1/chat/completions", json=chat("retry"))
    assert r.status_code == 200 and r.headers["x-ocak-backend"] == "a/retry"
    times = [p.at for p in gw.a.posts()]
    assert len(times) == 3
    assert times[1] - times[0] >= 0.95  # Retry-After: 1 honoured before the retry


def test_a_401_is_ocaks_own_problem_not_retried_and_the_key_never_shows(gw: Gateway) -> None:
    gw.a.push(status(401, body={"error": {"message": f"Invalid API Key: {KEY_A}"}}))
    with gw.http() as http:
        r = http.post("/v1/chat/completions", json=chat("auth"))
    assert r.status_code == 502
    error = r.json()["error"]
    assert error["code"] == "upstream_refused" and "'a'" in error["message"]
    assert KEY_A not in r.text
    assert (len(gw.a.posts()), len(gw.b.posts())) == (1, 0)


def test_a_hanging_upstream_times_out_and_falls_back(gw: Gateway) -> None:
    gw.a.push(hang())
    with gw.http() as http:
        r = http.post("/v1/chat/completions", json=chat("hang", stream=True))
    assert r.status_code == 200
    assert r.headers["x-ocak-backend"] == "b/hang"
    assert len(gw.a.posts()) == 1  # timeouts are not retried on the same target


def test_a_stream_cut_after_tokens_went_out_ends_with_an_error_event(gw: Gateway) -> None:
    gw.a.push(cut(4))
    with gw.http() as http:
        r = http.post("/v1/chat/completions", json=chat("cut", stream=True))
    assert r.headers["x-ocak-backend"] == "a/cut"
    lines = data_lines(r.text)
    sent = gw.a.posts()[0].body
    assert sent is not None
    assert lines[:4] == [x.decode() for x in gw.a.stream_lines(sent, ok())[:4]]
    assert json.loads(lines[4])["error"]["type"] == "server_error"
    assert len(lines) == 5 and "[DONE]" not in lines
    assert len(gw.b.posts()) == 0  # tokens had gone out: no fallback
    gw.a.push(cut(3))
    stream = gw.client().chat.completions.create(model="cut", messages=MSG, stream=True)  # type: ignore[arg-type]
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass


def test_the_breaker_skips_a_failing_target_then_probes_it(gw: Gateway) -> None:
    gw.a.default = status(500)
    with gw.http() as http:

        def served_by() -> str:
            r = http.post("/v1/chat/completions", json=chat("breaker"))
            assert r.status_code == 200
            return str(r.headers["x-ocak-backend"])

        assert [served_by() for _ in range(2)] == ["b/brk", "b/brk"]
        assert len(gw.a.posts()) == 2  # two failures open the breaker
        assert [served_by() for _ in range(3)] == ["b/brk"] * 3
        assert len(gw.a.posts()) == 2  # open: a is not asked
        time.sleep(1.6)  # the cool-down
        gw.a.default = ok()
        assert served_by() == "a/brk"  # the probe succeeds and closes it
        assert served_by() == "a/brk"
    assert len(gw.a.posts()) == 4


def test_replicas_share_the_load_by_weight(gw: Gateway) -> None:
    with gw.http() as http:
        backends = [
            http.post("/v1/chat/completions", json=chat("balanced")).headers["x-ocak-backend"]
            for _ in range(60)
        ]
    a, b = backends.count("a/lb"), backends.count("b/lb")
    assert a + b == 60
    assert 30 <= a <= 57 and b >= 3  # weights 3:1, expected 45:15


# -- local only ------------------------------------------------------------------------------


def test_a_local_only_key_is_served_locally_or_refused(gw: Gateway) -> None:
    with gw.http(gw.local_key) as http:
        r = http.post("/v1/chat/completions", json=chat("mixed"))
        assert r.status_code == 200, r.text
        assert r.headers["x-ocak-backend"] == "local/default"
        refused = http.post("/v1/chat/completions", json=chat("plain", stream=True))
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "locality_local_required"
    assert gw.a.posts() == []  # nothing left the machine


def test_the_require_locality_header_is_enforced(gw: Gateway) -> None:
    with gw.http(**{"x-ocak-require-locality": "local"}) as http:
        r = http.post("/v1/chat/completions", json=chat("plain"))
    assert r.status_code == 403
    assert gw.a.posts() == []


def test_another_ocak_on_loopback_proves_it_is_local(gw: Gateway) -> None:
    with gw.http(gw.local_key) as http:
        r = http.post("/v1/chat/completions", json=chat("private"))
        assert r.status_code == 200, r.text
        assert r.headers["x-ocak-backend"] == "box/default"
        assert r.headers["x-ocak-locality"] == "local"
        with http.stream("POST", "/v1/chat/completions", json=chat("private", stream=True)) as s:
            assert s.headers["x-ocak-backend"] == "box/default"
            assert s.headers["x-ocak-locality"] == "local"
            assert data_lines(s.read().decode())[-1] == "[DONE]"
    with gw.http() as http:  # not local-only: the upstream still says where it ran
        r = http.post("/v1/chat/completions", json=chat("boxed"))
        assert r.headers["x-ocak-locality"] == "local"


def test_a_loopback_server_that_cannot_prove_it_is_local_gets_nothing(gw: Gateway) -> None:
    with gw.http(gw.local_key) as http:
        r = http.post("/v1/chat/completions", json=chat("pretend"))
    assert r.status_code == 403
    assert "could prove" in r.json()["error"]["message"]
    assert gw.pretender.posts() == []  # asked about locality (GET), never sent the request
    assert [x.method for x in gw.pretender.received] == ["GET"]


# -- Replicate, records, models, secrets ------------------------------------------------


def test_replicate_through_the_gateway(gw: Gateway) -> None:
    stream = gw.client().chat.completions.create(model="rep", messages=MSG, stream=True)  # type: ignore[arg-type]
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "".join(gw.rep.tokens)
    with gw.http() as http:
        r = http.post("/v1/chat/completions", json=chat("rep-tools", tools=TOOLS))
    assert r.headers["x-ocak-backend"] == "a/rt"  # Replicate takes no tools: skipped
    assert [p.path for p in gw.rep.posts()] == ["/v1/models/meta/llama/predictions"]


def test_usage_records_count_remote_tokens(gw: Gateway) -> None:
    with gw.http() as http:
        whole = http.post("/v1/chat/completions", json=chat("plain"))
        streamed = http.post("/v1/chat/completions", json=chat("plain", stream=True))
    row = usage_rows(gw.data, request_id=whole.headers["x-request-id"])[0]
    assert (row["model"], row["backend"], row["locality"], row["key_name"]) == (
        "plain",
        "a/plain",
        "remote",
        "main",
    )
    assert (row["prompt_tokens"], row["completion_tokens"], row["status"]) == (11, 7, "completed")
    row = usage_rows(gw.data, request_id=streamed.headers["x-request-id"])[0]
    assert (row["completion_tokens"], row["stream"]) == (len(TOKENS), 1)
    assert row["ttft_ms"] is not None


def test_models_list_aliases_with_locality_and_no_keys(gw: Gateway) -> None:
    with gw.http() as http:
        listing = http.get("/v1/models")
        private = http.get("/v1/models/private")
        plain = http.get("/v1/models/plain")
    cards = {m["id"]: m for m in listing.json()["data"]}
    assert cards["private"]["meta"]["locality"] == "local"
    assert cards["plain"]["meta"] == {
        "alias": True,
        "locality": "any",
        "targets": ["a/plain"],
        "skipped": [],
    }
    assert cards["default"]["meta"]["engine"] == "llama.cpp"
    assert private.headers["x-ocak-locality"] == "local"
    assert plain.headers["x-ocak-locality"] == "remote"
    for secret in (KEY_A, KEY_B, KEY_R):
        assert secret not in listing.text


def test_keys_appear_in_no_response_and_no_log_line(gw: Gateway) -> None:
    gw.a.push(echo_auth(), echo_auth())  # an upstream that echoes the key it was sent
    gw.a.push(status(500, body={"error": {"message": f"db down; key was {KEY_A}"}}))
    gw.a.push(status(500, body={"error": {"message": f"db down; key was {KEY_A}"}}))
    with gw.http() as http:
        whole = http.post("/v1/chat/completions", json=chat("plain"))
        streamed = http.post("/v1/chat/completions", json=chat("plain", stream=True))
        failed = http.post("/v1/chat/completions", json=chat("plain"))
    assert "***" in whole.text and "***" in streamed.text
    assert failed.status_code == 502 and "db down" in failed.text
    log = gw.server.log()
    assert "db down" in log  # the failure was logged ...
    for text in (whole.text, streamed.text, failed.text, log):
        for secret in (KEY_A, KEY_B, KEY_R):
            assert secret not in text  # ... with no key in it
