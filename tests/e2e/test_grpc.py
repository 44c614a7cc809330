"""End to end over real gRPC on loopback: `ocak serve --grpc-port` on the real default model.

The same process serves HTTP, so gRPC answers are checked against HTTP's for the same
request, and the slot count of HTTP's /health shows what a cancelled call frees.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from helpers import BUNDLED_EMBEDDING, BUNDLED_SPEECH, ServerProcess, free_port, wait_until
from ocak.grpc.v1 import ocak_pb2 as pb
from ocak.grpc.v1 import ocak_pb2_grpc as rpc
from ocak.store.db import database_path, open_database
from ocak.store.keys import create_key
from ocak.store.usage import recent_usage

COLORS = [pb.ChatMessage(role="user", content="Name three colors.")]
# Greedy decoding keeps counting far past what the tests read: a generation that would
# run for hundreds of tokens unless something stops it.
COUNTING = "Count from 1 to 1000: 1, 2, 3, 4,"
PARALLEL = 2


@dataclass
class Served:
    proc: ServerProcess
    target: str
    channel: grpc.Channel
    stub: rpc.OcakStub

    def active(self) -> int:
        body = httpx.get(f"{self.proc.url}/health", timeout=5).json()
        return int(body["models"][0]["active"])


def start(data: Path, *extra: str) -> tuple[ServerProcess, str]:
    port = free_port()
    proc = ServerProcess(
        ["--grpc-port", str(port), "--ctx-size", "2048", *extra],
        env={"OCAK_DATA_DIR": str(data)},
    )
    proc.wait_ready()
    return proc, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data = tmp_path_factory.mktemp("ocak-grpc")
    proc, target = start(data, "--parallel", str(PARALLEL), "--max-queue", "0")
    channel = grpc.insecure_channel(target)
    try:
        yield Served(proc, target, channel, rpc.OcakStub(channel))
    finally:
        channel.close()
        proc.stop()


def rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def trailers(err: grpc.RpcError) -> dict[str, str]:
    return {m.key: str(m.value) for m in err.trailing_metadata() or ()}


def chat(stub: rpc.OcakStub, **kw: Any) -> list[pb.ChatResponse]:
    metadata = kw.pop("metadata", None)
    kw.setdefault("model", "default")
    kw.setdefault("messages", COLORS)
    return list(stub.Chat(pb.ChatRequest(**kw), metadata=metadata))


def text_of(messages: list[pb.ChatResponse]) -> str:
    return "".join(m.content for m in messages)


# -- streaming -------------------------------------------------------------------------


def test_chat_streams_pieces_then_one_final_message_with_usage(served: Served) -> None:
    call = served.stub.Chat(pb.ChatRequest(model="default", messages=COLORS, max_tokens=24))
    out = list(call)
    pieces, last = out[:-1], out[-1]
    assert len(pieces) >= 2
    assert all(m.content for m in pieces)
    assert all(m.finish_reason == pb.FINISH_REASON_UNSPECIFIED for m in pieces)
    assert not any(m.HasField("usage") for m in pieces)
    assert last.content == ""
    assert last.finish_reason in (pb.FINISH_REASON_STOP, pb.FINISH_REASON_LENGTH)
    assert last.usage.prompt_tokens > 5
    assert 0 < last.usage.completion_tokens <= 24
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert str(dict(call.initial_metadata())["x-request-id"]).startswith("req_")


def test_chat_text_is_the_http_chat_text(served: Served) -> None:
    out = chat(served.stub, max_tokens=32, temperature=0)
    http = httpx.post(
        f"{served.proc.url}/v1/chat/completions",
        json={
            "model": "default",
            "messages": [{"role": "user", "content": "Name three colors."}],
            "max_tokens": 32,
            "temperature": 0,
        },
        timeout=60,
    ).json()
    assert text_of(out) == http["choices"][0]["message"]["content"]
    assert out[-1].usage.completion_tokens == http["usage"]["completion_tokens"]
    assert out[-1].usage.prompt_tokens == http["usage"]["prompt_tokens"]


def test_generate_text_is_the_http_completion_text(served: Served) -> None:
    request = pb.GenerateRequest(model="default", prompt="The capital of France is", temperature=0)
    out = list(served.stub.Generate(request))
    http = httpx.post(
        f"{served.proc.url}/v1/completions",
        json={"model": "default", "prompt": "The capital of France is", "temperature": 0},
        timeout=60,
    ).json()
    assert "".join(m.text for m in out) == http["choices"][0]["text"]
    # Without max_tokens, Generate stops at 16 tokens, as /v1/completions does.
    assert out[-1].usage.completion_tokens == http["usage"]["completion_tokens"] <= 16


def test_sampling_parameters_reach_the_engine(served: Served) -> None:
    story = [pb.ChatMessage(role="user", content="Tell me a short story.")]

    def sample(seed: int) -> str:
        return text_of(chat(served.stub, messages=story, max_tokens=30, seed=seed, temperature=1))

    assert sample(1234) == sample(1234)
    assert len({sample(1), sample(2), sample(3)}) > 1
    counted = served.stub.Generate(
        pb.GenerateRequest(
            model="default", prompt=COUNTING, max_tokens=40, temperature=0, stop=[" 9,"]
        )
    )
    out = list(counted)
    text = "".join(m.text for m in out)
    assert " 9," not in text
    assert text.rstrip().endswith("8,")
    assert out[-1].finish_reason == pb.FINISH_REASON_STOP


def test_list_models(served: Served) -> None:
    models = served.stub.ListModels(pb.ListModelsRequest()).models
    assert [m.id for m in models] == ["default", *BUNDLED_SPEECH, *BUNDLED_EMBEDDING]
    assert {m.engine for m in models[1:]} == {"piper", "faster-whisper", "numpy-bert"}
    assert models[0].engine == "llama.cpp"
    assert models[0].state == "ready"
    assert models[0].context_length == 2048
    assert models[0].quantization == "Q4_1"
    assert models[0].size_bytes > 50_000_000


# -- errors ----------------------------------------------------------------------------


def test_unknown_model_is_not_found(served: Served) -> None:
    err = rpc_error(lambda: chat(served.stub, model="no-such-model"))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "no-such-model" in str(err.details())
    assert trailers(err)["ocak-error-code"] == "model_not_found"


def test_context_overflow_is_invalid_argument_with_the_numbers(served: Served) -> None:
    long = "hello " * 3000
    err = rpc_error(
        lambda: list(
            served.stub.Generate(pb.GenerateRequest(model="default", prompt=long, max_tokens=50))
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    t = trailers(err)
    assert t["ocak-error-code"] == "context_length_exceeded"
    assert t["ocak-context-length"] == "2048"
    assert t["ocak-max-tokens"] == "50"
    prompt_tokens = int(t["ocak-prompt-tokens"])
    assert prompt_tokens > 2048
    assert f"{prompt_tokens} in the messages" in str(err.details())
    # The same words as HTTP's 400 for the same request.
    http = httpx.post(
        f"{served.proc.url}/v1/completions",
        json={"model": "default", "prompt": long, "max_tokens": 50},
        timeout=60,
    )
    assert http.status_code == 400
    assert http.json()["error"]["message"] == err.details()


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"presence_penalty": -3}, "presence_penalty"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": [""]}, "stop"),
        ({"model": ""}, "model"),
        ({"messages": []}, "messages"),
        ({"messages": [pb.ChatMessage(role="robot", content="hi")]}, "messages.[0].role"),
    ],
)
def test_bad_parameters_are_invalid_argument_naming_the_field(
    served: Served, change: dict[str, Any], param: str
) -> None:
    err = rpc_error(lambda: chat(served.stub, **change))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert trailers(err)["ocak-error-param"] == param
    assert param in str(err.details())


# -- cancellation and the queue --------------------------------------------------------


def counting(stub: rpc.OcakStub, **kw: Any) -> Any:
    request = pb.GenerateRequest(model="default", prompt=COUNTING, max_tokens=1500, temperature=0)
    return stub.Generate(request, **kw)


def read_some(call: Any, n: int = 30) -> None:
    for _ in range(n):
        message = next(call)
        assert message.finish_reason == pb.FINISH_REASON_UNSPECIFIED, "ended on its own"


def test_cancelling_a_call_stops_its_generation_and_frees_its_slot(served: Served) -> None:
    assert wait_until(lambda: served.active() == 0)
    call = counting(served.stub)
    read_some(call)
    assert served.active() == 1
    call.cancel()
    # Left alone it would decode ~1500 tokens for many seconds more.
    assert wait_until(lambda: served.active() == 0, timeout=10)
    assert call.code() == grpc.StatusCode.CANCELLED


def test_a_passed_deadline_frees_the_slot(served: Served) -> None:
    assert wait_until(lambda: served.active() == 0)
    call = counting(served.stub, timeout=2.0)
    with pytest.raises(grpc.RpcError) as info:
        list(call)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert wait_until(lambda: served.active() == 0, timeout=10)


def test_a_client_that_goes_away_frees_its_slot(served: Served) -> None:
    assert wait_until(lambda: served.active() == 0)
    channel = grpc.insecure_channel(served.target)
    call = counting(rpc.OcakStub(channel))
    read_some(call)
    assert served.active() == 1
    channel.close()  # the connection goes, with no cancel sent for the call itself
    assert wait_until(lambda: served.active() == 0, timeout=10)


def test_a_full_queue_is_resource_exhausted(served: Served) -> None:
    assert wait_until(lambda: served.active() == 0)
    running = [counting(served.stub) for _ in range(PARALLEL)]
    for call in running:
        read_some(call, 3)
    assert served.active() == PARALLEL
    err = rpc_error(lambda: chat(served.stub, max_tokens=4))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert trailers(err)["ocak-error-code"] == "queue_full"
    assert trailers(err)["retry-after"] == "1"
    for call in running:
        call.cancel()
    assert wait_until(lambda: served.active() == 0, timeout=10)
    assert chat(served.stub, max_tokens=4)[-1].usage.completion_tokens > 0


# -- discovery -------------------------------------------------------------------------


def test_reflection_lists_the_service_and_describes_it(served: Served) -> None:
    db = ProtoReflectionDescriptorDatabase(served.channel)
    services = set(db.get_services())
    assert {"ocak.v1.Ocak", "grpc.health.v1.Health"} <= services
    pool = DescriptorPool(db)
    service = pool.FindServiceByName("ocak.v1.Ocak")
    assert [m.name for m in service.methods] == ["Generate", "Chat", "ListModels"]
    chat_request = pool.FindMessageTypeByName("ocak.v1.ChatRequest")
    assert {"model", "messages", "max_tokens", "temperature", "top_p", "stop", "seed"} <= set(
        chat_request.fields_by_name
    )


def test_health_check_is_serving(served: Served) -> None:
    health = health_pb2_grpc.HealthStub(served.channel)
    for service in ("", "ocak.v1.Ocak"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


# -- a server of its own ---------------------------------------------------------------


def test_keys_guard_grpc_and_sigterm_turns_health_not_serving(tmp_path: Path) -> None:
    db = open_database(database_path(tmp_path))
    key, _ = create_key(db, "game-server")
    db.close()
    proc, target = start(tmp_path)
    try:
        with grpc.insecure_channel(target) as channel:
            stub = rpc.OcakStub(channel)
            err = rpc_error(lambda: chat(stub, max_tokens=4))
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED
            err = rpc_error(lambda: chat(stub, max_tokens=4, metadata=(("authorization", "x"),)))
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED
            out = chat(stub, max_tokens=4, metadata=(("authorization", f"Bearer {key}"),))
            assert out[-1].usage.completion_tokens > 0
            health = health_pb2_grpc.HealthStub(channel)
            watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=60)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            proc.proc.send_signal(signal.SIGTERM)
            assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert proc.stop() == 0
    finally:
        proc.stop()
    db = open_database(database_path(tmp_path))
    try:
        rows = recent_usage(db)
    finally:
        db.close()
    # The call made with the key has its usage row, under the key's name.
    assert [(r.key_name, r.status) for r in rows if r.completion_tokens] == [
        ("game-server", "completed")
    ]


def test_a_taken_grpc_port_fails_startup(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = ServerProcess(["--grpc-port", str(port)], env={"OCAK_DATA_DIR": str(tmp_path)})
        try:
            assert proc.proc.wait(timeout=60) != 0
            log = proc.log()
        finally:
            proc.stop()
        assert f"cannot listen for gRPC on 127.0.0.1:{port}" in log
        assert "Traceback" not in log
