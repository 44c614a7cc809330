"""Replicate's predictions API, answered in OpenAI's shape.

A call creates a prediction (``POST /models/{owner}/{name}/predictions``, or
``POST /predictions`` with a version for ``owner/name:version``), then streams
its output from the prediction's ``urls.stream`` (server-sent ``output``,
``error`` and ``done`` events) or polls ``urls.get`` until it ends. Token counts
come from the prediction's ``metrics``. A stream the client leaves, or a call
that times out, cancels the prediction.

Chat messages become ``prompt`` and ``system_prompt`` (the inputs Replicate's
language models share); ``params: {input: {...}}`` on a target adds inputs a
particular model takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

from ocak.errors import OcakError
from ocak.providers.base import (
    Batch,
    Call,
    Chunk,
    Endpoint,
    Provider,
    Upstream,
    UpstreamReply,
    UpstreamStream,
    parse_json,
)
from ocak.providers.errors import (
    TRANSPORT_ERRORS,
    UpstreamBroken,
    UpstreamTimeout,
    from_status,
    from_transport,
)
from ocak.providers.sse import sse_events

TERMINAL = ("succeeded", "failed", "canceled")
_SAMPLING = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty")


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def replicate_input(payload: dict[str, Any], endpoint: Endpoint) -> dict[str, Any]:
    """The prediction's ``input`` for an OpenAI-shaped body."""
    data: dict[str, Any] = {}
    if endpoint == "chat":
        messages = [m for m in payload.get("messages") or [] if isinstance(m, dict)]
        system = [
            _text(m.get("content")) for m in messages if m.get("role") in ("system", "developer")
        ]
        turns = [m for m in messages if m.get("role") not in ("system", "developer")]
        if len(turns) == 1 and turns[0].get("role") == "user":
            data["prompt"] = _text(turns[0].get("content"))
        else:
            lines = [f"{m.get('role')}: {_text(m.get('content'))}" for m in turns]
            data["prompt"] = "\n".join([*lines, "assistant:"])
        if system:
            data["system_prompt"] = "\n\n".join(system)
    else:
        prompt = payload.get("prompt")
        data["prompt"] = prompt[0] if isinstance(prompt, list) and prompt else prompt or ""
    limit = payload.get("max_completion_tokens") or payload.get("max_tokens")
    if limit is not None:
        data["max_tokens"] = limit
    for name in _SAMPLING:
        if payload.get(name) is not None:
            data[name] = payload[name]
    stop = payload.get("stop")
    if stop:
        data["stop_sequences"] = stop if isinstance(stop, str) else ",".join(stop)
    extra = payload.get("input")
    if isinstance(extra, dict):
        data.update(extra)
    return data


class Shaper:
    """Builds OpenAI chunks and replies for one prediction."""

    def __init__(self, endpoint: Endpoint, model: str, prediction_id: str) -> None:
        self.endpoint = endpoint
        self.model = model
        self.id = ("chatcmpl-" if endpoint == "chat" else "cmpl-") + prediction_id
        self.created = int(time.time())
        self.object = "chat.completion.chunk" if endpoint == "chat" else "text_completion"
        self.started = False

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> Chunk:
        data = {
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }
        return Chunk(json.dumps(data, ensure_ascii=False).encode(), data)

    def text(self, text: str, finish: str | None = None) -> Chunk:
        if self.endpoint == "completions":
            return self._chunk([{"index": 0, "text": text, "finish_reason": finish}])
        delta: dict[str, Any] = {"content": text} if text or finish is None else {}
        if not self.started:
            delta = {"role": "assistant", "content": text}
            self.started = True
        return self._chunk([{"index": 0, "delta": delta, "finish_reason": finish}])

    def usage(self, usage: dict[str, int]) -> Chunk:
        return self._chunk([], usage=usage)

    def reply(self, text: str, usage: dict[str, int] | None) -> UpstreamReply:
        choice: dict[str, Any]
        if self.endpoint == "chat":
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
            kind = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "finish_reason": "stop"}
            kind = "text_completion"
        data: dict[str, Any] = {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        }
        if usage is not None:
            data["usage"] = usage
        return UpstreamReply(json.dumps(data, ensure_ascii=False).encode(), data, "remote")


def _usage(prediction: dict[str, Any]) -> dict[str, int] | None:
    metrics = prediction.get("metrics") or {}
    if not isinstance(metrics, dict) or "output_token_count" not in metrics:
        return None
    prompt = int(metrics.get("input_token_count") or 0)
    completion = int(metrics.get("output_token_count") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _output(prediction: dict[str, Any]) -> str:
    output = prediction.get("output")
    if isinstance(output, list):
        return "".join(str(o) for o in output)
    return "" if output is None else str(output)


class Replicate(Provider):
    """Language models on Replicate."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._headers = {"content-type": "application/json", **self.config.headers}
        if self.key:
            self._headers["authorization"] = f"Bearer {self.key}"

    def unsupported(self, call: Call) -> str | None:
        for param in ("tools", "response_format"):
            if call.payload.get(param):
                return f"provider '{self.name}' (Replicate) does not take {param}"
        return None

    async def send(self, model: str, call: Call) -> Upstream:
        t = call.timeouts
        loop = asyncio.get_running_loop()
        deadline = loop.time() + t.total
        first_deadline = min(deadline, loop.time() + t.first_token) if call.stream else deadline
        prediction: dict[str, Any] | None = None
        try:
            async with asyncio.timeout_at(first_deadline):
                prediction = await self._create(model, call)
                shaper = Shaper(call.endpoint, model, str(prediction.get("id") or uuid.uuid4()))
                stream_url = (prediction.get("urls") or {}).get("stream")
                if call.stream and stream_url and prediction.get("status") not in TERMINAL:
                    rest = _batched(self._stream(prediction, stream_url, shaper, call, deadline))
                    try:
                        first = await anext(rest)
                    except StopAsyncIteration:
                        raise UpstreamBroken(f"provider '{self.name}' streamed nothing") from None
                    return UpstreamStream(first, rest, "remote")
                prediction = await self._wait(prediction, call)
        except TRANSPORT_ERRORS as exc:  # asyncio's timeout is an OSError too
            await self._cancel(prediction)
            missed = "did not answer in time"
            raise from_transport(self.name, exc, self.secrets, missed=missed) from None
        except BaseException:
            await self._cancel(prediction)
            raise
        text, usage = _output(prediction), _usage(prediction)
        if not call.stream:
            return shaper.reply(text, usage)
        return UpstreamStream(
            Batch([shaper.text(text)]), _batched(_finish(shaper, usage)), "remote"
        )

    async def _create(self, model: str, call: Call) -> dict[str, Any]:
        body: dict[str, Any] = {"input": replicate_input(call.payload, call.endpoint)}
        if call.stream:
            body["stream"] = True
        owner_name, _, version = model.partition(":")
        if version:
            url = f"{self.url}/predictions"
            body["version"] = version
        else:
            url = f"{self.url}/models/{owner_name}/predictions"
        headers = self._headers
        if not call.stream:  # hold the request until the prediction ends (up to 60 s)
            headers = {**headers, "prefer": f"wait={max(1, min(60, int(call.timeouts.total)))}"}
        async with self.session.post(
            url,
            data=json.dumps(body, ensure_ascii=False).encode(),
            headers=headers,
            timeout=self.timeout(call.timeouts, call.timeouts.total),
            allow_redirects=False,
            proxy=self.proxy,
        ) as response:
            return self._check(response.status, await response.read(), response.headers)

    def _check(self, status: int, content: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
        if status >= 300:
            raise from_status(self.name, status, content, headers, self.secrets)
        prediction = parse_json(self.name, self.secrets.scrub_bytes(content))
        if prediction.get("status") == "failed":
            error = self.secrets.scrub(str(prediction.get("error") or "no detail"))
            raise UpstreamBroken(f"provider '{self.name}': the prediction failed: {error}")
        if prediction.get("status") == "canceled":
            raise UpstreamBroken(f"provider '{self.name}': the prediction was canceled")
        return prediction

    async def _get(self, prediction: dict[str, Any], call: Call) -> dict[str, Any]:
        url = (prediction.get("urls") or {}).get("get")
        if not url:
            raise UpstreamBroken(f"provider '{self.name}' gave no URL to follow the prediction")
        async with self.session.get(
            url,
            headers=self._headers,
            timeout=self.timeout(call.timeouts, call.timeouts.total),
            proxy=self.proxy,
        ) as response:
            return self._check(response.status, await response.read(), response.headers)

    async def _wait(self, prediction: dict[str, Any], call: Call) -> dict[str, Any]:
        """Poll until the prediction ends (the caller's timeout bounds it)."""
        delay = 0.05
        while prediction.get("status") not in TERMINAL:
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 2)
            prediction = await self._get(prediction, call)
        return prediction

    async def _stream(
        self,
        prediction: dict[str, Any],
        url: str,
        shaper: Shaper,
        call: Call,
        deadline: float,
    ) -> AsyncIterator[Chunk]:
        headers = {**self._headers, "accept": "text/event-stream", "cache-control": "no-store"}
        loop = asyncio.get_running_loop()
        done = False
        response = await self.session.get(
            url,
            headers=headers,
            timeout=self.timeout(call.timeouts, call.timeouts.first_token),
            allow_redirects=False,
            proxy=self.proxy,
        )
        try:
            if response.status >= 300:
                raise from_status(
                    self.name,
                    response.status,
                    await response.read(),
                    response.headers,
                    self.secrets,
                )
            async for event in sse_events(response.content.iter_any()):
                if event.event == "output":
                    text = self.secrets.scrub_bytes(event.data).decode("utf-8", "replace")
                    yield shaper.text(text)
                elif event.event == "error":
                    raise UpstreamBroken(
                        f"provider '{self.name}' failed mid-stream: "
                        + self.secrets.scrub(event.data.decode("utf-8", "replace"))
                    )
                elif event.event == "done":
                    done = True
                    reason = _reason(event.data)
                    if reason in ("canceled", "error"):
                        raise UpstreamBroken(f"provider '{self.name}': the prediction {reason}")
                    break
                if loop.time() > deadline:
                    raise UpstreamTimeout(f"provider '{self.name}' exceeded its total timeout")
            if not done:
                raise UpstreamBroken(f"provider '{self.name}' ended its stream mid-answer")
        except TRANSPORT_ERRORS as exc:
            raise from_transport(self.name, exc, self.secrets) from None
        finally:
            response.close()
            if not done:
                await self._cancel(prediction)
        usage = None
        with contextlib.suppress(OcakError, *TRANSPORT_ERRORS):  # counts: on the prediction
            usage = _usage(await self._get(prediction, call))
        async for chunk in _finish(shaper, usage):
            yield chunk

    async def _cancel(self, prediction: dict[str, Any] | None) -> None:
        """Cancel a prediction nobody will read (best effort, a couple of seconds at most)."""
        url = ((prediction or {}).get("urls") or {}).get("cancel")
        if url:
            with contextlib.suppress(*TRANSPORT_ERRORS, RuntimeError):
                async with self.session.post(
                    url,
                    headers=self._headers,
                    timeout=aiohttp.ClientTimeout(total=2.0),
                    proxy=self.proxy,
                ) as response:
                    await response.read()


def _reason(data: bytes) -> str | None:
    try:
        value = json.loads(data or b"{}")
    except ValueError:
        return None
    reason = value.get("reason") if isinstance(value, dict) else None
    return reason if isinstance(reason, str) and reason else None


async def _batched(chunks: AsyncIterator[Chunk]) -> AsyncIterator[Batch]:
    try:
        async for chunk in chunks:
            yield Batch([chunk])
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


async def _finish(shaper: Shaper, usage: dict[str, int] | None) -> AsyncIterator[Chunk]:
    yield shaper.text("", "stop")
    if usage is not None:
        yield shaper.usage(usage)
