"""Every OpenAI-compatible API (Groq, OpenAI, DeepInfra, Together, OpenRouter, Ollama,
vLLM, LM Studio, another ocak): the body passes through, translated by its preset.

Streams are read event by event and handed on as they arrive; a streaming call
asks for usage (``stream_options.include_usage``) so that ocak's records and
limits count the tokens. Another ocak on a loopback address can prove that it
is local: asked with ``x-ocak-require-locality: local`` it serves the request
on its own machine or refuses, and says ``x-ocak-locality: local``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from ocak.config.gateway import Timeouts
from ocak.config.presets import GENERIC, PRESETS, Preset
from ocak.errors import OcakError
from ocak.providers.base import (
    LOCALITY,
    REQUIRE_LOCALITY,
    Batch,
    Call,
    Chunk,
    Locality,
    LocalityClass,
    Provider,
    Upstream,
    UpstreamReply,
    UpstreamStream,
    parse_json,
)
from ocak.providers.errors import (
    TRANSPORT_ERRORS,
    LocalityUnverified,
    Secrets,
    UpstreamBroken,
    UpstreamTimeout,
    from_status,
    from_transport,
)
from ocak.providers.sse import sse_batches

_PATHS = {"chat": "/chat/completions", "completions": "/completions"}


class OpenAICompatible(Provider):
    """An API that speaks OpenAI's chat and completions endpoints."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.preset: Preset = PRESETS.get(self.config.preset or "", GENERIC)
        headers = {"content-type": "application/json", **self.config.headers}
        if self.key:
            headers["authorization"] = f"Bearer {self.key}"
        self._headers = headers
        self._local_headers = {**headers, REQUIRE_LOCALITY: "local"}
        self._verified: dict[str, float] = {}  # model -> monotonic time the proof expires
        self.locality_ttl = 30.0
        self._locality_class: LocalityClass = (
            "local"
            if self.config.local
            else "verify"
            if self.preset.locality == "verify" and self.loopback
            else "remote"
        )

    @property
    def locality(self) -> LocalityClass:
        return self._locality_class

    def body(self, model: str, call: Call) -> dict[str, Any]:
        """The body this provider is sent (preset translation, model, usage for streams)."""
        payload = translate(call.payload, self.preset)
        payload["model"] = model
        if call.stream:
            payload["stream"] = True
            options = payload.get("stream_options")
            options = dict(options) if isinstance(options, dict) else {}
            options["include_usage"] = True
            payload["stream_options"] = options
        else:
            payload.pop("stream_options", None)
            payload["stream"] = False
        return payload

    async def send(self, model: str, call: Call) -> Upstream:
        content = json.dumps(self.body(model, call), ensure_ascii=False, separators=(",", ":"))
        t = call.timeouts
        loop = asyncio.get_running_loop()
        deadline = loop.time() + t.total
        first_deadline = loop.time() + t.first_token if call.stream else deadline
        response: aiohttp.ClientResponse | None = None
        try:
            async with asyncio.timeout_at(min(first_deadline, deadline)):
                response = await self.session.post(
                    self.url + _PATHS[call.endpoint],
                    data=content.encode(),
                    headers=self.headers(call.local_only),
                    timeout=self.timeout(t, t.first_token if call.stream else t.total),
                    allow_redirects=False,
                    proxy=self.proxy,
                )
                if response.status >= 300:
                    body = await response.read()
                    raise from_status(
                        self.name, response.status, body, response.headers, self.secrets
                    )
                locality = self.answered_locality(response, call.local_only)
                if not call.stream:
                    raw = self.secrets.scrub_bytes(await response.read())
                    response.release()
                    return UpstreamReply(raw, parse_json(self.name, raw), locality)
                rest = self._batches(response, deadline)
                try:
                    first = await anext(rest)
                except StopAsyncIteration:
                    raise UpstreamBroken(
                        f"provider '{self.name}' ended its stream before any chunk"
                    ) from None
        except TRANSPORT_ERRORS as exc:  # asyncio's timeout is an OSError too
            _close(response)
            phase = "first chunk" if call.stream else "answer"
            limit = min(t.first_token, t.total) if call.stream else t.total
            missed = f"sent no {phase} within {limit:g}s"
            raise from_transport(self.name, exc, self.secrets, missed=missed) from None
        except BaseException:
            _close(response)
            raise
        return UpstreamStream(first, rest, locality)

    def headers(self, local_only: bool) -> dict[str, str]:
        """The request headers (a local-only call asks a loopback ocak to stay local)."""
        return self._local_headers if local_only else self._headers

    def answered_locality(self, response: aiohttp.ClientResponse, local_only: bool) -> Locality:
        """Where the upstream served: the operator's word, or a loopback ocak's proof
        (``LocalityUnverified`` when a local-only call got no such proof)."""
        said = response.headers.get(LOCALITY)
        kind = self.locality
        if kind == "local":
            return "local"
        if kind == "verify":
            if local_only and said != "local":
                raise LocalityUnverified(
                    f"provider '{self.name}' did not confirm that it served the request "
                    "locally; a local-only answer from it is not used"
                )
            return "local" if said == "local" else "remote"
        return "remote"

    async def _batches(
        self, response: aiohttp.ClientResponse, deadline: float
    ) -> AsyncIterator[Batch]:
        """The stream's chunks up to ``[DONE]``, in the batches the network delivered; a cut,
        an error event or the total timeout raise (the route makes that an SSE error event)."""
        loop = asyncio.get_running_loop()
        finished = False
        try:
            async for events in sse_batches(response.content.iter_any()):
                chunks: list[Chunk] = []
                for event in events:
                    raw = event.data
                    if raw == b"[DONE]":
                        yield Batch(chunks, last=True)
                        return
                    raw = self.secrets.scrub_bytes(raw)
                    data = parse_json(self.name, raw)
                    if "error" in data and not data.get("choices"):
                        if chunks:
                            yield Batch(chunks)
                        raise _stream_error(self.name, data["error"], self.secrets)
                    chunks.append(Chunk(raw, data))
                    choices = data.get("choices")
                    if choices and isinstance(choices[0], dict) and choices[0].get("finish_reason"):
                        finished = True
                if chunks:
                    yield Batch(chunks)
                if loop.time() > deadline:
                    raise UpstreamTimeout(f"provider '{self.name}' exceeded its total timeout")
            if not finished:
                raise UpstreamBroken(f"provider '{self.name}' ended its stream mid-answer")
        except TRANSPORT_ERRORS as exc:
            if isinstance(exc, TimeoutError):
                raise UpstreamTimeout(f"provider '{self.name}' went silent mid-stream") from None
            raise from_transport(self.name, exc, self.secrets) from None
        finally:
            response.close()

    async def verify_local(self, model: str, timeouts: Timeouts) -> bool:
        """Ask the upstream ocak whether it would serve ``model`` locally (cached a while)."""
        kind = self.locality
        if kind != "verify":
            return kind == "local"
        now = time.monotonic()
        if self._verified.get(model, 0.0) > now:
            return True
        try:
            async with self.session.get(
                f"{self.url}/models/{model}",
                headers=self._local_headers,
                timeout=self.timeout(timeouts, timeouts.first_token),
                allow_redirects=False,
                proxy=self.proxy,
            ) as response:
                await response.read()
        except TRANSPORT_ERRORS:
            return False
        ok = response.status == 200 and response.headers.get(LOCALITY) == "local"
        if ok:
            self._verified[model] = now + self.locality_ttl
        else:
            self._verified.pop(model, None)
        return ok


def _stream_error(provider: str, error: Any, secrets: Secrets) -> OcakError:
    message = error.get("message") if isinstance(error, dict) else error
    return UpstreamBroken(f"provider '{provider}' failed mid-stream: {secrets.scrub(str(message))}")


def _close(response: aiohttp.ClientResponse | None) -> None:
    if response is not None:
        response.close()


def translate(payload: dict[str, Any], preset: Preset) -> dict[str, Any]:
    """The request body this provider accepts; ``payload`` is not changed.

    The one place a body is changed for a provider: drop what it rejects, name the token
    limit the way it wants, leave everything else as the client sent it."""
    out = dict(payload)
    want = preset.max_tokens_param
    if want == "max_tokens" and "max_completion_tokens" in out:
        # max_completion_tokens supersedes max_tokens in OpenAI's API
        out["max_tokens"] = out.pop("max_completion_tokens")
    elif want == "max_completion_tokens" and "max_tokens" in out:
        limit = out.pop("max_tokens")
        out.setdefault("max_completion_tokens", limit)
    drop = preset.drop_message_fields
    messages = out.get("messages")
    if drop and isinstance(messages, list):
        out["messages"] = [
            {k: v for k, v in m.items() if k not in drop} if isinstance(m, dict) else m
            for m in messages
        ]
    return out
