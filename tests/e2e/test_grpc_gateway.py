"""gRPC on gateway aliases: the same router as HTTP (a hosted target, fallback to the
local model, local-only keys), over real gRPC and a scripted upstream on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from gateway_stubs import OpenAIStub, hosted_gateway, ok, status
from helpers import ServerProcess, free_port
from keys_helpers import usage_rows
from ocak.grpc.v1 import ocak_pb2 as pb
from ocak.grpc.v1 import ocak_pb2_grpc as rpc

SECRET = "sk-grpc-hosted-4b1e"
HELLO = [pb.ChatMessage(role="user", content="Say hello.")]


@dataclass
class Setup:
    server: ServerProcess
    data: Path
    upstream: OpenAIStub
    stub: rpc.OcakStub
    key: str
    local_key: str

    def chat(self, model: str, key: str | None = None) -> list[pb.ChatResponse]:
        metadata = (("authorization", f"Bearer {key or self.key}"),)
        request = pb.ChatRequest(model=model, messages=HELLO, max_tokens=8, temperature=0)
        return list(self.stub.Chat(request, metadata=metadata, timeout=60))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    data: Path = tmp_path_factory.mktemp("grpc-gateway")
    port = free_port()
    with (
        hosted_gateway(data, SECRET, "--grpc-port", str(port)) as gw,
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        yield Setup(gw.server, data, gw.upstream, rpc.OcakStub(channel), gw.key, gw.local_key)


def test_an_alias_streams_the_hosted_models_tokens(setup: Setup) -> None:
    setup.upstream.reset()
    setup.upstream.push(ok(tokens=["Hel", "lo ", "there"]))
    messages = setup.chat("hosted")
    assert "".join(m.content for m in messages) == "Hello there"
    assert messages[-1].finish_reason == pb.FINISH_REASON_STOP
    (sent,) = setup.upstream.posts()
    assert sent.body is not None and sent.body["model"] == "big-model"
    assert sent.headers["authorization"] == f"Bearer {SECRET}"
    row = usage_rows(setup.data)[-1]
    assert (row["model"], row["backend"], row["locality"]) == (
        "hosted",
        "hosted-api/big-model",
        "remote",
    )


def test_a_failing_hosted_target_falls_back_to_the_local_model(setup: Setup) -> None:
    setup.upstream.reset()
    setup.upstream.push(status(500), status(500), status(500))
    messages = setup.chat("hosted-or-local")
    assert "".join(m.content for m in messages)  # the local model answered
    assert usage_rows(setup.data)[-1]["backend"] == "llama.cpp:default"


def test_a_local_only_key_never_reaches_the_hosted_model(setup: Setup) -> None:
    setup.upstream.reset()
    with pytest.raises(grpc.RpcError) as info:
        setup.chat("hosted", key=setup.local_key)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert setup.upstream.posts() == []
    # With a local target in the alias, the same key is served here.
    messages = setup.chat("hosted-or-local", key=setup.local_key)
    assert "".join(m.content for m in messages)
    assert setup.upstream.posts() == []
    assert SECRET not in setup.server.log()
