"""One request path: the same cases over HTTP and gRPC give the same outcome and usage row.

A real ``ocak serve`` with a gRPC port, gateway aliases (a local target with
params, a hosted one on a scripted upstream) and keys. Each case runs on both
transports; the outcome is compared through each transport's own status mapping
and the usage row (key, model, backend, locality, status, error code, tokens)
must be the same. Character turns go through the same admission
(``ModelServing.authorize``); their model path is the gateway resolver's.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from gateway_stubs import OpenAIStub, ok
from helpers import ServerProcess, free_port, running
from keys_helpers import create_key, usage_rows
from ocak.grpc.v1 import ocak_pb2 as pb
from ocak.grpc.v1 import ocak_pb2_grpc as rpc

CONFIG = """
model: [default]
providers:
  hosted-api: {{type: openai, base_url: "{url}/v1", api_key_env: OCAK_TEST_HOSTED_KEY}}
models:
  greedy: {{targets: [{{local: default, params: {{temperature: 0, max_tokens: 12}}}}]}}
  hosted: {{targets: [{{provider: hosted-api, model: big-model}}]}}
"""
GRPC_CODES = {
    200: grpc.StatusCode.OK,
    400: grpc.StatusCode.INVALID_ARGUMENT,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
}
ROW = ("key_name", "model", "backend", "locality", "status", "error_code")


@dataclass
class Setup:
    server: ServerProcess
    data: Path
    upstream: OpenAIStub
    stub: rpc.OcakStub
    keys: dict[str, str]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    data: Path = tmp_path_factory.mktemp("parity")
    keys = {
        "open": create_key(data, "open"),
        "only-default": create_key(data, "only-default", "--models", "default"),
        "offline": create_key(data, "offline", "--locality", "local"),
        "rpm-http": create_key(data, "rpm-http", "--rpm", "1"),
        "rpm-grpc": create_key(data, "rpm-grpc", "--rpm", "1"),
    }
    upstream = OpenAIStub().start()
    (data / "ocak.yaml").write_text(CONFIG.format(url=upstream.url))
    port = free_port()
    env = {"OCAK_DATA_DIR": str(data), "OCAK_TEST_HOSTED_KEY": "sk-parity"}
    args = ["--config", str(data / "ocak.yaml"), "--grpc-port", str(port), "--parallel", "2"]
    try:
        with (
            running(args, env=env) as server,
            grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
        ):
            yield Setup(server, data, upstream, rpc.OcakStub(channel), keys)
    finally:
        upstream.stop()


def over_http(s: Setup, key: str, model: str, **fields: Any) -> tuple[int, str]:
    body = {"model": model, "messages": [{"role": "user", "content": "Say hello."}], **fields}
    r = httpx.post(
        f"{s.server.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {s.keys[key]}"},
        timeout=60,
    )
    if r.status_code != 200:
        return r.status_code, ""
    return 200, str(r.json()["choices"][0]["message"]["content"])


def over_grpc(s: Setup, key: str, model: str, **fields: Any) -> tuple[grpc.StatusCode, str]:
    messages = [pb.ChatMessage(role="user", content="Say hello.")]
    request = pb.ChatRequest(model=model, messages=messages, **fields)
    metadata = (("authorization", f"Bearer {s.keys[key]}"),)
    try:
        out = list(s.stub.Chat(request, metadata=metadata, timeout=60))
    except grpc.RpcError as err:
        return err.code(), ""
    return grpc.StatusCode.OK, "".join(m.content for m in out)


def last_row(s: Setup) -> dict[str, Any]:
    return usage_rows(s.data)[-1]


def row_fields(row: dict[str, Any]) -> tuple[Any, ...]:
    return (*(row[f] for f in ROW), row["completion_tokens"] > 0)


CASES = [
    # name, key, model, extra fields, HTTP status
    ("alias params reach the local target", "open", "greedy", {}, 200),
    ("a key restricted to other models", "only-default", "greedy", {}, 403),
    ("an unknown model", "open", "no-such-model", {}, 404),
    ("a local-only key on a hosted-only alias", "offline", "hosted", {}, 403),
    ("max_tokens over the context", "open", "default", {"max_tokens": 10**7}, 400),
]


@pytest.mark.parametrize(
    ("name", "key", "model", "fields", "status"), CASES, ids=[c[0] for c in CASES]
)
def test_the_same_case_gives_the_same_outcome_and_usage_row(
    setup: Setup, name: str, key: str, model: str, fields: dict[str, Any], status: int
) -> None:
    code, http_text = over_http(setup, key, model, **fields)
    assert code == status, name
    http_row = last_row(setup)
    grpc_code, grpc_text = over_grpc(setup, key, model, **fields)
    assert grpc_code == GRPC_CODES[status], name
    grpc_row = last_row(setup)
    assert grpc_row["id"] != http_row["id"]  # each call made its own row
    assert row_fields(grpc_row) == row_fields(http_row), name
    assert grpc_text == http_text


def test_alias_params_apply_alike_on_both_transports(setup: Setup) -> None:
    """temperature 0 and max_tokens 12 from the alias: greedy, 12 tokens, on both."""
    texts = [over_http(setup, "open", "greedy")[1] for _ in range(2)]
    texts += [over_grpc(setup, "open", "greedy")[1] for _ in range(2)]
    assert texts[0] and len(set(texts)) == 1, texts
    rows = usage_rows(setup.data)[-4:]
    assert {(r["backend"], r["completion_tokens"]) for r in rows} == {("llama.cpp:default", 12)}
    # A field the client sets wins over the alias's.
    code, _ = over_http(setup, "open", "greedy", max_tokens=3)
    assert code == 200 and usage_rows(setup.data)[-1]["completion_tokens"] == 3
    grpc_code, _ = over_grpc(setup, "open", "greedy", max_tokens=3)
    assert grpc_code == grpc.StatusCode.OK and usage_rows(setup.data)[-1]["completion_tokens"] == 3


def test_a_hosted_alias_gets_the_same_payload_from_both_transports(setup: Setup) -> None:
    setup.upstream.reset()
    setup.upstream.push(ok(tokens=["Hi", "!"]), ok(tokens=["Hi", "!"]))
    assert over_http(setup, "open", "hosted", temperature=0.5) == (200, "Hi!")
    assert over_grpc(setup, "open", "hosted", temperature=0.5) == (grpc.StatusCode.OK, "Hi!")
    http_sent, grpc_sent = (p.body or {} for p in setup.upstream.posts())
    for field in ("model", "messages", "temperature", "top_p", "max_tokens"):
        assert http_sent.get(field) == grpc_sent.get(field), field
    assert grpc_sent["stream"] is True  # gRPC answers stream
    assert "top_p" not in grpc_sent  # only what the client set (gRPC sent 1.0 before)
    rows = usage_rows(setup.data)[-2:]  # token counts are the upstream's own, per answer
    assert {row_fields(r) for r in rows} == {
        ("open", "hosted", "hosted-api/big-model", "remote", "completed", None, True)
    }


def test_list_models_is_the_same_list_on_both_transports(setup: Setup) -> None:
    for key in ("open", "only-default"):
        auth = {"Authorization": f"Bearer {setup.keys[key]}"}
        http_ids = [
            m["id"] for m in httpx.get(f"{setup.server.url}/v1/models", headers=auth).json()["data"]
        ]
        metadata = (("authorization", f"Bearer {setup.keys[key]}"),)
        grpc_ids = [
            m.id for m in setup.stub.ListModels(pb.ListModelsRequest(), metadata=metadata).models
        ]
        assert grpc_ids == http_ids, key
    assert grpc_ids == ["default"]


def test_text_that_is_not_unicode_is_refused_where_it_can_be_sent(setup: Setup) -> None:
    """JSON can spell a lone surrogate; protobuf strings cannot carry one at all."""
    r = httpx.post(
        f"{setup.server.url}/v1/chat/completions",
        content=b'{"model": "default", "messages": [{"role": "user", "content": "\\ud800"}]}',
        headers={
            "Authorization": f"Bearer {setup.keys['open']}",
            "Content-Type": "application/json",
        },
    )
    assert r.status_code == 400 and "not valid Unicode" in r.json()["error"]["message"]
    with pytest.raises(UnicodeEncodeError):  # the client cannot even build the message
        pb.ChatMessage(role="user", content="\ud800")


def test_a_key_over_its_limit_is_refused_alike(setup: Setup) -> None:
    assert over_http(setup, "rpm-http", "greedy")[0] == 200
    assert over_http(setup, "rpm-http", "greedy")[0] == 429
    http_row = last_row(setup)
    assert over_grpc(setup, "rpm-grpc", "greedy")[0] == grpc.StatusCode.OK
    assert over_grpc(setup, "rpm-grpc", "greedy")[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    grpc_row = last_row(setup)
    assert http_row["error_code"] == grpc_row["error_code"] == "rate_limit_exceeded"
    assert row_fields(http_row)[1:] == row_fields(grpc_row)[1:]  # all but the key's name
