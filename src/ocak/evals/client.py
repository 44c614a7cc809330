"""The runner's HTTP client: OpenAI chat completions and embeddings on a running ocak.

Real HTTP (httpx), so a run measures what applications get: the server's admission,
aliases, hosted targets. A 429 or 503 is retried after the server's ``Retry-After``
(bounded), so a rate-limited key slows the run down instead of failing it; a spent
token budget (``insufficient_quota``) is not retried. Any other failure is an answer
with an error, recorded as a failed sample, never an exception.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from ocak.errors import AuthenticationError, Unavailable
from ocak.evals.base import Answer, HelperError, ToolCallOut
from ocak.providers.errors import retry_after

RETRIED = (429, 503)
Sleep = Callable[[float], Awaitable[None]]


class ServerUnreachable(Unavailable):
    """No ocak answers at the URL (exit code 2)."""


@dataclass
class Reply:
    """One request's outcome: the answer, or the error; what it cost."""

    status: int | None
    body: dict[str, Any] | None
    error: str | None
    latency_ms: float | None
    attempts: int
    waited_s: float = 0.0
    connect_failed: bool = False

    def answer(self) -> Answer | None:
        """The assistant's answer in a chat completion body (None for an error)."""
        if self.error is not None or self.body is None:
            return None
        try:
            choice = self.body["choices"][0]
            message = choice.get("message") or {}
            calls = tuple(
                ToolCallOut(
                    str((c.get("function") or {}).get("name", "")),
                    str((c.get("function") or {}).get("arguments", "")),
                )
                for c in message.get("tool_calls") or []
            )
            usage = self.body.get("usage") or {}
            return Answer(
                output=str(message.get("content") or ""),
                tool_calls=calls,
                finish_reason=choice.get("finish_reason"),
                prompt_tokens=usage.get("prompt_tokens"),
                completion_tokens=usage.get("completion_tokens"),
                latency_ms=self.latency_ms,
            )
        except (KeyError, IndexError, TypeError, AttributeError):
            return None


def error_message(response: httpx.Response) -> str:
    """The error's message in OpenAI's shape, else the start of the body."""
    try:
        error = response.json()["error"]
        message = error["message"] if isinstance(error, dict) else str(error)
    except (ValueError, KeyError, TypeError):
        message = response.text[:300].strip() or response.reason_phrase
    return f"HTTP {response.status_code}: {message}"


def _code(response: httpx.Response) -> str | None:
    try:
        error = response.json().get("error")
        return error.get("code") if isinstance(error, dict) else None
    except (ValueError, AttributeError):
        return None


class EvalClient:
    """One connection pool to the server for a run (an async context manager)."""

    def __init__(
        self,
        url: str,
        key: str | None = None,
        *,
        timeout: float = 300.0,
        max_retries: int = 8,
        max_wait: float = 60.0,
        sleep: Sleep = asyncio.sleep,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.AsyncClient(
            transport=transport,  # an app in this process (a fine-tuning job's eval)
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=10.0),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_wait = max_wait
        self.sleep = sleep

    async def __aenter__(self) -> EvalClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def preflight(self) -> None:
        """Check that an ocak answers at the URL and accepts the key, before any sample:
        ``ServerUnreachable`` or ``AuthenticationError`` otherwise."""
        try:
            response = await self.http.get("/v1/models", timeout=10.0)
        except httpx.HTTPError as exc:
            raise ServerUnreachable(
                f"cannot reach ocak at {self.url}: {exc or type(exc).__name__} "
                "(is `ocak serve` running? --url sets where)"
            ) from None
        if response.status_code == 401:
            raise AuthenticationError(
                f"{self.url} refused the key ({error_message(response)}): "
                "pass --key or set OCAK_API_KEY"
            )

    async def post(self, path: str, body: dict[str, Any]) -> Reply:
        """POST ``body``, retrying 429/503 after Retry-After (or a growing wait), at most
        ``max_retries`` times."""
        attempts, waited = 0, 0.0
        while True:
            attempts += 1
            start = time.perf_counter()
            try:
                response = await self.http.post(path, json=body)
            except httpx.TimeoutException:
                return Reply(None, None, f"timed out after {self.timeout:g} s", None, attempts)
            except httpx.HTTPError as exc:
                connect = isinstance(exc, httpx.ConnectError)
                if connect and attempts <= self.max_retries:
                    delay = min(self.max_wait, 0.5 * 2 ** (attempts - 1))
                    await self.sleep(delay)
                    waited += delay
                    continue
                message = f"{type(exc).__name__}: {exc}".rstrip(": ")
                return Reply(None, None, message, None, attempts, waited, connect)
            latency = (time.perf_counter() - start) * 1000
            status = response.status_code
            if (
                status in RETRIED
                and attempts <= self.max_retries
                and _code(response) != "insufficient_quota"
            ):
                hinted = retry_after(response.headers)
                fallback = 0.5 * 2 ** (attempts - 1)
                delay = min(self.max_wait, hinted if hinted is not None else fallback)
                await self.sleep(delay)
                waited += delay
                continue
            if status != 200:
                return Reply(status, None, error_message(response), latency, attempts, waited)
            try:
                parsed = response.json()
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                return Reply(status, None, "the answer is not a JSON object", latency, attempts)
            return Reply(status, parsed, None, latency, attempts, waited)

    async def chat(self, body: dict[str, Any]) -> Reply:
        reply = await self.post("/v1/chat/completions", body)
        if reply.error is None and reply.answer() is None:
            reply.error = "the answer has no choices[0].message"
        return reply

    async def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        reply = await self.post("/v1/embeddings", {"model": model, "input": texts})
        if reply.error is not None or reply.body is None:
            raise HelperError(reply.error or "no answer")
        try:
            rows = sorted(reply.body["data"], key=lambda d: int(d.get("index", 0)))
            return [[float(x) for x in row["embedding"]] for row in rows]
        except (KeyError, TypeError, ValueError) as exc:
            raise HelperError(f"unexpected embeddings answer ({exc})") from None

    async def complete(
        self, model: str, messages: list[dict[str, Any]], params: dict[str, Any]
    ) -> str:
        body = {**params, "model": model, "messages": messages, "stream": False}
        reply = await self.chat(body)
        answer = reply.answer()
        if reply.error is not None or answer is None:
            raise HelperError(reply.error or "no answer")
        return answer.output
