"""Upstreams for the gateway tests, served over real HTTP on loopback (uvicorn in a thread).

``OpenAIStub`` speaks OpenAI's chat and completions endpoints and does what it
is scripted to: answer (streaming or not, with tool calls when asked for
tools), fail with a status (500, 429 with Retry-After, 401 echoing the key it
was sent), hang, or cut a stream after some chunks. ``ReplicateStub`` speaks
Replicate's predictions API (create, stream URL, get URL, cancel). Both record
every request they receive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from helpers import AppServer, ServerProcess
from keys_helpers import create_key
from ocak.config.gateway import ProviderConfig
from ocak.gateway.router import RemoteTarget
from ocak.providers.base import Http
from ocak.providers.errors import Secrets
from ocak.providers.openai_compat import OpenAICompatible

TOKENS = ["Hel", "lo", ",", " wör", "ld", "!", " 🙂", "\n", "done"]


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    at: float


@dataclass
class Behavior:
    """What the stub does with one request."""

    kind: str = "ok"  # ok | status | hang | cut | echo_auth
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    tokens: list[str] = field(default_factory=lambda: list(TOKENS))
    cut_after: int = 2
    delay: float = 0.0
    locality: str | None = None  # answer with x-ocak-locality (pretend to be an ocak)


def ok(**kw: Any) -> Behavior:
    return Behavior("ok", **kw)


def status(code: int, body: Any = None, headers: dict[str, str] | None = None) -> Behavior:
    if body is None:
        body = {"error": {"message": f"stub says {code}", "type": "server_error"}}
    return Behavior("status", status=code, body=body, headers=headers or {})


def hang() -> Behavior:
    return Behavior("hang")


def cut(after: int) -> Behavior:
    return Behavior("cut", cut_after=after)


def echo_auth() -> Behavior:
    return Behavior("echo_auth")


class _Cut(Exception):
    """Raised inside a streaming body: uvicorn drops the connection mid-response."""


class Stub:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script: deque[Behavior] = deque()
        self.default = Behavior()
        self.lock = threading.Lock()
        self.server: AppServer | None = None

    def reset(self) -> None:
        with self.lock:
            self.received.clear()
            self.script.clear()
            self.default = Behavior()

    def push(self, *behaviors: Behavior) -> None:
        with self.lock:
            self.script.extend(behaviors)

    def next(self, *kinds: str) -> Behavior:
        """The scripted behavior (of one of ``kinds``, when given), else the default."""
        with self.lock:
            if self.script and (not kinds or self.script[0].kind in kinds):
                return self.script.popleft()
            return self.default

    def posts(self) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.method == "POST"]

    async def record(self, request: Request) -> Received:
        raw = await request.body()
        body = json.loads(raw) if raw else None
        entry = Received(request.method, request.url.path, dict(request.headers), body, time.time())
        with self.lock:
            self.received.append(entry)
        return entry

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def start(self) -> Stub:
        self.server = AppServer(self.app()).__enter__()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.__exit__(None, None, None)

    def app(self) -> Starlette:
        raise NotImplementedError


def chunk(cid: str, model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": model,
        "system_fingerprint": "fp_stub",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "x_stub": {"unknown": ["kept", 1, None]},  # a field ocak does not know
    }


def tool_deltas(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    name = tools[0]["function"]["name"]
    return [
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_stub1",
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"Ankara"}'}}]},
    ]


class OpenAIStub(Stub):
    """A scriptable OpenAI-compatible upstream."""

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/completions", self.chat, methods=["POST"]),
                Route("/v1/models/{model:path}", self.model, methods=["GET"]),
            ]
        )

    async def model(self, request: Request) -> Response:
        await self.record(request)
        behavior = self.default
        headers = {"x-ocak-locality": behavior.locality} if behavior.locality else {}
        return JSONResponse(
            {"id": request.path_params["model"], "object": "model"}, headers=headers
        )

    def stream_lines(self, body: dict[str, Any], behavior: Behavior) -> list[bytes]:
        """The exact SSE ``data:`` payloads this stub streams for ``body``."""
        cid, model = "chatcmpl-stub", str(body.get("model"))
        tools = body.get("tools")
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        if tools:
            deltas += tool_deltas(tools)
        else:
            deltas += [{"content": t} for t in behavior.tokens]
        payloads = [chunk(cid, model, d) for d in deltas]
        payloads.append(chunk(cid, model, {}, "tool_calls" if tools else "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            for p in payloads:
                p["usage"] = None
            payloads.append(
                {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": 1700000000,
                    "model": model,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": 11,
                        "completion_tokens": len(behavior.tokens),
                        "total_tokens": 11 + len(behavior.tokens),
                    },
                }
            )
        return [json.dumps(p, ensure_ascii=False).encode() for p in payloads]

    async def chat(self, request: Request) -> Response:
        entry = await self.record(request)
        body = entry.body or {}
        behavior = self.next()
        headers = {"x-ocak-locality": behavior.locality} if behavior.locality else {}
        if behavior.delay:
            await asyncio.sleep(behavior.delay)
        if behavior.kind == "status":
            return JSONResponse(
                behavior.body, status_code=behavior.status, headers=behavior.headers
            )
        if behavior.kind == "hang":  # until the client gives up
            while not await request.is_disconnected():
                await asyncio.sleep(0.05)
            return Response(status_code=499)
        if behavior.kind == "echo_auth":
            secret = request.headers.get("authorization", "")
            behavior = Behavior(tokens=[f"your key: {secret}"])
        if body.get("stream"):
            lines = self.stream_lines(body, behavior)
            limit = behavior.cut_after if behavior.kind == "cut" else None

            async def frames() -> Any:
                for i, line in enumerate(lines):
                    if limit is not None and i == limit:
                        raise _Cut("cut mid-stream, as scripted")
                    yield b"data: " + line + b"\n\n"
                    await asyncio.sleep(0)
                yield b"data: [DONE]\n\n"

            return StreamingResponse(frames(), media_type="text/event-stream", headers=headers)
        text = "".join(behavior.tokens)
        message: dict[str, Any] = {"role": "assistant", "content": text}
        finish = "stop"
        if body.get("tools"):
            name = body["tools"][0]["function"]["name"]
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_stub1",
                        "type": "function",
                        "function": {"name": name, "arguments": '{"city": "Ankara"}'},
                    }
                ],
            }
            finish = "tool_calls"
        reply = {
            "id": "chatcmpl-stub",
            "object": "chat.completion",
            "created": 1700000000,
            "model": body.get("model"),
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
            "x_stub": {"unknown": True},
        }
        return JSONResponse(reply, headers=headers)


@dataclass
class Prediction:
    id: str
    model: str
    input: dict[str, Any]
    polls: int = 0
    canceled: bool = False


class ReplicateStub(Stub):
    """Replicate's predictions API: create, stream, get, cancel."""

    def __init__(self, tokens: list[str] | None = None) -> None:
        super().__init__()
        self.tokens = tokens or ["Merhaba", " dünya", "\nline two", "!"]
        self.predictions: dict[str, Prediction] = {}
        self.fail_next = False

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/models/{owner}/{name}/predictions", self.create, methods=["POST"]),
                Route("/v1/predictions", self.create, methods=["POST"]),
                Route("/v1/predictions/{pid}", self.get, methods=["GET"]),
                Route("/v1/predictions/{pid}/cancel", self.cancel, methods=["POST"]),
                Route("/stream/{pid}", self.stream, methods=["GET"]),
            ]
        )

    def _json(self, p: Prediction, status: str) -> dict[str, Any]:
        done = status == "succeeded"
        return {
            "id": p.id,
            "model": p.model,
            "input": p.input,
            "status": status,
            "output": self.tokens if done else None,
            "error": "the model ran out of memory" if status == "failed" else None,
            "urls": {
                "get": f"{self.url}/v1/predictions/{p.id}",
                "cancel": f"{self.url}/v1/predictions/{p.id}/cancel",
                "stream": f"{self.url}/stream/{p.id}",
            },
            "metrics": {"input_token_count": 5, "output_token_count": len(self.tokens)}
            if done
            else {},
        }

    async def create(self, request: Request) -> Response:
        entry = await self.record(request)
        body = entry.body or {}
        behavior = self.next("status")
        if behavior.kind == "status":
            return JSONResponse(
                behavior.body, status_code=behavior.status, headers=behavior.headers
            )
        model = "/".join(
            [request.path_params.get("owner", ""), request.path_params.get("name", "")]
        ).strip("/") or str(body.get("version"))
        p = Prediction(uuid.uuid4().hex[:12], model, body.get("input") or {})
        self.predictions[p.id] = p
        if self.fail_next:
            self.fail_next = False
            return JSONResponse(self._json(p, "failed"), status_code=201)
        wait = request.headers.get("prefer", "").startswith("wait")
        return JSONResponse(self._json(p, "succeeded" if wait else "starting"), status_code=201)

    async def get(self, request: Request) -> Response:
        await self.record(request)
        p = self.predictions[request.path_params["pid"]]
        p.polls += 1
        status = "canceled" if p.canceled else ("processing" if p.polls < 2 else "succeeded")
        return JSONResponse(self._json(p, status))

    async def cancel(self, request: Request) -> Response:
        await self.record(request)
        p = self.predictions[request.path_params["pid"]]
        p.canceled = True
        return JSONResponse(self._json(p, "canceled"))

    async def stream(self, request: Request) -> Response:
        await self.record(request)
        p = self.predictions[request.path_params["pid"]]
        behavior = self.next("cut")

        async def frames() -> Any:
            for i, token in enumerate(self.tokens):
                if behavior.kind == "cut" and i == behavior.cut_after:
                    raise _Cut("cut")
                data = "".join(f"data: {line}\n" for line in token.split("\n"))
                yield f"event: output\nid: {i}\n{data}\n".encode()
                await asyncio.sleep(0)
            p.polls = 99  # finished
            yield b"event: done\ndata: {}\n\n"

        return StreamingResponse(frames(), media_type="text/event-stream")


@dataclass
class HostedGateway:
    """An ocak in front of a scripted hosted provider, with a plain and a local-only key."""

    server: ServerProcess
    upstream: OpenAIStub
    data: Path
    key: str
    local_key: str


# Two public names: one served only by the hosted upstream, one falling back to the
# local default model.
HOSTED_CONFIG = """
model: [default]
providers:
  hosted-api: {{type: openai, base_url: "{url}/v1", api_key_env: OCAK_TEST_HOSTED_KEY}}
models:
  hosted: {{targets: [{{provider: hosted-api, model: big-model}}]}}
  hosted-or-local: {{targets: [{{provider: hosted-api, model: big-model}}, {{local: default}}]}}
"""


@contextlib.contextmanager
def hosted_gateway(data: Path, secret: str, *args: str) -> Iterator[HostedGateway]:
    """Start ``ocak serve`` on ``HOSTED_CONFIG`` (its ``{url}`` filled with the upstream's),
    the provider's key ``secret`` in ``OCAK_TEST_HOSTED_KEY``; stop both afterwards."""
    upstream = OpenAIStub().start()
    key = create_key(data, "app")
    local_key = create_key(data, "offline", "--locality", "local")
    path = data / "ocak.yaml"
    path.write_text(HOSTED_CONFIG.format(url=upstream.url))
    server = ServerProcess(
        ["--config", str(path), *args],
        env={"OCAK_DATA_DIR": str(data), "OCAK_TEST_HOSTED_KEY": secret},
        log_path=data / "server.log",
    )
    try:
        server.wait_ready()
        yield HostedGateway(server, upstream, data, key, local_key)
    finally:
        server.stop()
        upstream.stop()


def remote_target(name: str, model: str = "m", *, local: bool = False, **kw: Any) -> RemoteTarget:
    """A target on an OpenAI-compatible provider that nothing listens for (for logic that
    never sends): remote unless ``local``."""
    config = ProviderConfig(type="openai", base_url="http://127.0.0.1:9/v1", local=local)
    provider = OpenAICompatible(name, config, key=None, http=Http(), secrets=Secrets([]))
    return RemoteTarget(name=name, provider=provider, model=model, **kw)
