"""An ocak app on scripted fake models, served by uvicorn on loopback, for ``ocak eval``.

Models: ``alpha`` answers well; ``beta`` is right every other time it is asked the same
thing (so repeats show a pass rate between 0 and 1); ``judge`` says PASS when the graded
answer names Paris. A ``Throttle`` in front answers the next N chat requests with 429 and
``Retry-After``, as a rate-limited key would get.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from helpers import AppServer, wait_until
from ocak.config import Settings
from ocak.engines.fake import FakeEngine
from ocak.engines.registry import EngineRegistry
from ocak.protocol.generation import GenerationRequest
from ocak.server.app import create_app
from ocak.store.db import open_database
from ocak.store.keys import create_key

CAPITAL = "What is the capital of France? One word."
CITY_JSON = "Give the city as JSON."
ADD = "Add 2 and 3 with the tool."
TOOL_CALL = '<tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call>'


def _last_user(request: GenerationRequest) -> str:
    for m in reversed(request.messages or []):
        if m.role == "user":
            return str(m.content)
    return request.prompt or ""


class Scripts:
    """The fake models' answers, counting what each model was asked."""

    def __init__(self) -> None:
        self.asked: Counter[str] = Counter()  # model -> requests
        self.seen: Counter[tuple[str, str]] = Counter()
        self.lock = threading.Lock()

    def reset(self) -> None:
        with self.lock:
            self.asked.clear()
            self.seen.clear()

    def _count(self, model: str, text: str) -> int:
        with self.lock:
            self.asked[model] += 1
            self.seen[(model, text)] += 1
            return self.seen[(model, text)]

    def answer(self, model: str, request: GenerationRequest) -> str:
        text = _last_user(request)
        nth = self._count(model, text)
        right = model == "alpha" or nth % 2 == 1
        if request.constraint is not None and request.constraint.kind == "lark":
            return TOOL_CALL if right else "I cannot use tools."
        if request.constraint is not None:
            return '{"a": 2, "b": 3}'
        if CAPITAL in text:
            return "Paris." if right else "Lyon, I think."
        if CITY_JSON in text:
            return '{"city": "Paris", "population": 2100000}' if right else "Paris (not JSON)"
        if request.messages and request.messages[0].role == "system":
            return f"[{request.messages[0].content}] {text}"
        return f"You said: {text}"

    def judge(self, request: GenerationRequest) -> str:
        text = _last_user(request)
        self._count("judge", text)
        graded = text.split("<<<", 1)[-1].split(">>>", 1)[0]
        return "PASS\nIt names Paris." if "Paris" in graded else "FAIL\nWrong city."


class Throttle:
    """ASGI middleware: the next ``pending`` chat completions get 429 with Retry-After."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.pending = 0
        self.retry_after = "1"
        self.refused = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/chat/completions" and self.pending > 0:
            self.pending -= 1
            self.refused += 1
            body = b'{"error": {"message": "Rate limit reached.", "code": "rate_limit_exceeded"}}'
            await send(
                {
                    "type": "http.response.start",
                    "status": 429,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"retry-after", self.retry_after.encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


class EvalServer:
    def __init__(self, url: str, scripts: Scripts, throttle: Throttle, token: str) -> None:
        self.url = url
        self.token = token
        self.scripts = scripts
        self.throttle = throttle


@contextlib.contextmanager
def eval_server(data_dir: Path, *, delay: float = 0.0, key: bool = False) -> Iterator[EvalServer]:
    """ocak with the ``alpha``, ``beta`` and ``judge`` fake models, on a loopback port
    (``delay``: seconds per generated word; ``key``: a key exists, so one is needed)."""
    scripts = Scripts()

    def fake(name: str, script: Any) -> FakeEngine:
        return FakeEngine(name, script=script, delay=delay, context_length=100_000)

    engines = [
        fake("alpha", lambda r: scripts.answer("alpha", r)),
        fake("beta", lambda r: scripts.answer("beta", r)),
        fake("judge", scripts.judge),
    ]
    db = open_database(data_dir / "ocak.db")
    token = create_key(db, "eval")[0] if key else ""
    app = create_app(Settings(data_dir=data_dir), EngineRegistry(engines), db=db)
    throttle = Throttle(app)
    try:
        with AppServer(throttle) as server:
            assert wait_until(lambda: app.state.ocak.engines.ready, timeout=30)
            yield EvalServer(server.url, scripts, throttle, token)
    finally:
        db.close()
