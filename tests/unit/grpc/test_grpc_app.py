"""gRPC in-process over real loopback sockets, with scripted engines: health transitions,
keys, records and shutdown. The same app as `ocak serve` (create_app's lifespan starts
gRPC beside HTTP); only the engine is the fake one, so timing and load are controlled.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from helpers import BUNDLED_EMBEDDING, BUNDLED_SPEECH, AppServer, free_port, wait_until
from ocak.config import Settings
from ocak.engines.base import Engine
from ocak.engines.fake import FakeEngine
from ocak.engines.registry import EngineRegistry
from ocak.grpc.v1 import ocak_pb2 as pb
from ocak.grpc.v1 import ocak_pb2_grpc as rpc
from ocak.protocol.record import RequestRecord
from ocak.server.app import create_app
from ocak.store.db import Database, open_database
from ocak.store.keys import create_key
from ocak.store.usage import recent_usage

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
HI = [pb.ChatMessage(role="user", content="hi there")]


class GatedEngine(FakeEngine):
    """A fake engine whose load finishes only when the test opens the gate."""

    def __init__(self, model_id: str, gate: threading.Event) -> None:
        super().__init__(model_id)
        self.gate = gate

    async def load(self) -> None:
        await asyncio.to_thread(self.gate.wait)
        self.state = "ready"


class Served:
    def __init__(self, server: AppServer, grpc_port: int) -> None:
        self.http = server
        self.channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        self.stub = rpc.OcakStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def check(self, service: str = "") -> int:
        return int(self.health.Check(health_pb2.HealthCheckRequest(service=service)).status)


@contextmanager
def served(
    *engines: Engine,
    db: Database | None = None,
    sinks: list[Any] | None = None,
    **settings: Any,
) -> Iterator[Served]:
    port = free_port()
    app = create_app(
        Settings(grpc_port=port, **settings), EngineRegistry(engines), sinks=sinks, db=db
    )
    with AppServer(app) as server:
        s = Served(server, port)
        try:
            yield s
        finally:
            s.channel.close()


def wait_ready(s: Served) -> None:
    assert wait_until(lambda: httpx.get(f"{s.http.url}/health").status_code == 200, timeout=10)


def chat(
    stub: rpc.OcakStub, model: str = "fake", max_tokens: int | None = None, **kw: Any
) -> list[pb.ChatResponse]:
    request = pb.ChatRequest(model=model, messages=HI, max_tokens=max_tokens)
    return list(stub.Chat(request, **kw))


def rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def trailers(err: grpc.RpcError) -> dict[str, str]:
    return {m.key: str(m.value) for m in err.trailing_metadata() or ()}


# -- health ----------------------------------------------------------------------------


def test_health_not_serving_while_loading_then_serving() -> None:
    gate = threading.Event()
    try:
        with served(GatedEngine("fake", gate)) as s:
            assert s.check() == NOT_SERVING
            assert s.check("ocak.v1.Ocak") == NOT_SERVING
            watch = s.health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=20)
            assert next(watch).status == NOT_SERVING
            # A call while the model loads waits for the load (it does not fail).
            with ThreadPoolExecutor(1) as pool:
                waiting = pool.submit(chat, s.stub)
                time.sleep(0.5)
                assert not waiting.done()
                gate.set()
                assert next(watch).status == SERVING
                assert "".join(r.content for r in waiting.result(timeout=20))
            watch.cancel()
            assert s.check() == SERVING
            assert s.check("ocak.v1.Ocak") == SERVING
            with pytest.raises(grpc.RpcError) as unknown:
                s.check("no.such.Service")
            assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        gate.set()  # never leave the loader thread waiting


def test_health_not_serving_when_the_model_failed_to_load() -> None:
    with served(FakeEngine("broken", fail_load="weights are corrupt")) as s:
        assert wait_until(lambda: httpx.get(f"{s.http.url}/health").json()["status"] == "error")
        assert s.check() == NOT_SERVING


def test_shutdown_turns_health_not_serving_and_lets_running_streams_finish() -> None:
    engine = FakeEngine("fake", delay=0.05, script=lambda r: " ".join(["word"] * 20))
    with served(engine) as s:
        wait_ready(s)
        watch = s.health.Watch(health_pb2.HealthCheckRequest(service="ocak.v1.Ocak"), timeout=20)
        assert next(watch).status == SERVING
        stream = s.stub.Chat(pb.ChatRequest(model="fake", messages=HI))
        first = next(stream)
        assert first.content == "word"
        s.http.server.should_exit = True  # as SIGTERM does
        assert next(watch).status == NOT_SERVING
        rest = list(stream)  # the running stream is drained, not cut
        assert rest[-1].finish_reason == pb.FINISH_REASON_STOP
        assert "".join(m.content for m in [first, *rest]) == " ".join(["word"] * 20)
        assert engine.cancelled == 0


# -- records ---------------------------------------------------------------------------


def test_every_call_hands_its_record_to_the_sinks() -> None:
    seen: list[RequestRecord] = []

    def records() -> list[RequestRecord]:
        return [r for r in seen if r.method == "GRPC"]  # HTTP's /health polls come here too

    engine = FakeEngine("fake", delay=0.05, script=lambda r: " ".join(["w"] * 200))
    with served(engine, sinks=[seen.append]) as s:
        wait_ready(s)
        call = s.stub.Chat(
            pb.ChatRequest(model="fake", messages=HI, max_tokens=5),
            metadata=(("x-request-id", "my-id-1"),),
        )
        out = list(call)
        assert dict(call.initial_metadata())["x-request-id"] == "my-id-1"
        assert out[-1].usage.completion_tokens == 5
        assert wait_until(lambda: len(records()) == 1)
        done = records()[0]
        assert (done.request_id, done.method, done.path) == (
            "my-id-1",
            "GRPC",
            "/ocak.v1.Ocak/Chat",
        )
        assert (done.model, done.backend, done.stream) == ("fake", "fake:fake", True)
        assert (done.status, done.http_status, done.finish_reason) == ("completed", 200, "length")
        assert (done.prompt_tokens, done.completion_tokens) == (out[-1].usage.prompt_tokens, 5)
        assert done.ttft is not None and done.ended is not None

        err = rpc_error(lambda: list(s.stub.Generate(pb.GenerateRequest(model="nope", prompt="x"))))
        assert err.code() == grpc.StatusCode.NOT_FOUND
        assert wait_until(lambda: len(records()) == 2)
        assert (records()[1].status, records()[1].http_status, records()[1].error_code) == (
            "rejected",
            404,
            "model_not_found",
        )

        stream = s.stub.Generate(pb.GenerateRequest(model="fake", prompt="x"))
        next(stream)
        stream.cancel()
        assert wait_until(lambda: len(records()) == 3)
        assert records()[2].status == "cancelled"
        assert wait_until(lambda: engine.cancelled == 1 and engine.active == 0)


# -- keys ------------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_database(tmp_path / "ocak.db")
    try:
        yield database
    finally:
        database.close()


def test_keys_authenticate_permit_and_limit_grpc_calls(db: Database) -> None:
    alice, _ = create_key(db, "alice", models=["fake"])
    carol, _ = create_key(db, "carol", rpm=1)
    with served(FakeEngine("fake"), FakeEngine("other"), db=db) as s:
        wait_ready(s)
        # No key, a wrong key, a malformed header: UNAUTHENTICATED, ListModels included.
        for metadata in (
            (),
            (("authorization", "Bearer ocak-wrong"),),
            (("authorization", alice),),
        ):
            for call in (
                lambda md=metadata: chat(s.stub, metadata=md),
                lambda md=metadata: s.stub.ListModels(pb.ListModelsRequest(), metadata=md),
            ):
                err = rpc_error(call)
                assert err.code() == grpc.StatusCode.UNAUTHENTICATED
                assert trailers(err)["ocak-error-code"] == "invalid_api_key"
                assert "ocak-wrong" not in str(err.details())
        # The right key.
        auth = (("authorization", f"Bearer {alice}"),)
        out = chat(s.stub, metadata=auth)
        assert out[-1].finish_reason == pb.FINISH_REASON_STOP
        # ListModels lists what the key may use, as GET /v1/models does.
        listed = s.stub.ListModels(pb.ListModelsRequest(), metadata=auth).models
        assert [m.id for m in listed] == ["fake"]
        everyone = (("authorization", f"Bearer {carol}"),)
        listed = s.stub.ListModels(pb.ListModelsRequest(), metadata=everyone).models
        assert [m.id for m in listed] == ["fake", "other", *BUNDLED_SPEECH, *BUNDLED_EMBEDDING]
        # A key limited to other models.
        err = rpc_error(lambda: chat(s.stub, "other", metadata=auth))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        # A key over its requests per minute.
        limited = (("authorization", f"Bearer {carol}"),)
        chat(s.stub, metadata=limited)
        err = rpc_error(lambda: chat(s.stub, metadata=limited))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert int(trailers(err)["retry-after"]) >= 1
        # Health needs no key.
        assert s.check() == SERVING
    # Usage rows name the key, as for HTTP requests.
    rows = [r for r in recent_usage(db) if r.status == "completed"]
    assert sorted(r.key_name or "" for r in rows) == ["alice", "carol"]
    assert all(r.model == "fake" and r.completion_tokens > 0 for r in rows)


def test_without_keys_every_call_is_allowed(db: Database) -> None:
    with served(FakeEngine("fake"), db=db) as s:
        wait_ready(s)
        assert chat(s.stub)[-1].finish_reason == pb.FINISH_REASON_STOP
        assert chat(s.stub, metadata=(("authorization", "Bearer anything"),))[-1].usage.total_tokens


def test_server_input_caps_apply_to_grpc() -> None:
    with served(FakeEngine("fake"), max_messages=2, max_tokens_limit=3, max_body_bytes=4096) as s:
        wait_ready(s)
        # The body limit is gRPC's message limit: RESOURCE_EXHAUSTED, as gRPC says "too large".
        big = [pb.ChatMessage(role="user", content="x" * 5000)]
        err = rpc_error(lambda: list(s.stub.Chat(pb.ChatRequest(model="fake", messages=big))))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        many = [pb.ChatMessage(role="user", content="x")] * 3
        err = rpc_error(lambda: list(s.stub.Chat(pb.ChatRequest(model="fake", messages=many))))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert trailers(err)["ocak-error-param"] == "messages"
        err = rpc_error(lambda: chat(s.stub, max_tokens=4))
        assert trailers(err)["ocak-error-param"] == "max_tokens"
        # No max_tokens: the server's cap is the default.
        assert chat(s.stub)[-1].usage.completion_tokens == 3


def test_an_unexpected_failure_is_internal_without_its_details() -> None:
    def broken(request: object) -> str:
        raise RuntimeError("secret internals at 0xdeadbeef")

    records: list[RequestRecord] = []
    with served(FakeEngine("fake", script=broken), sinks=[records.append]) as s:
        wait_ready(s)
        err = rpc_error(lambda: chat(s.stub))
        assert err.code() == grpc.StatusCode.INTERNAL
        assert "secret" not in str(err.details())
        assert "internal error" in str(err.details())
        grpc_records = [r for r in records if r.method == "GRPC"]
        assert [(r.status, r.http_status) for r in grpc_records] == [("failed", 500)]
