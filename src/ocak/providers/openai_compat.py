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

import httpx

from ocak.errors import OcakError
from ocak.gateway.config import Timeouts
from ocak.providers.base import (
    LOCALITY,
    REQUIRE_LOCALITY,
    Call,
    Chunk,
    Locality,
    LocalityClass,
    Provider,
    Upstream,
    UpstreamReply,
    UpstreamStream,
    is_loopback_url,
    parse_json,
)
from ocak.providers.errors import (
    LocalityUnverified,
    UpstreamBroken,
    UpstreamTimeout,
    from_httpx,
    from_status,
)
from ocak.providers.presets import GENERIC, PRESETS, Preset, translate
from ocak.providers.sse import sse_events

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

    @property
    def locality(self) -> LocalityClass:
        if self.config.local:
            return "local"
        if self.preset.locality == "verify" and is_loopback_url(self.url):
            return "verify"
        return "remote"

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
        request = self.client.build_request(
            "POST",
            self.url + _PATHS[call.endpoint],
            content=content.encode(),
            headers=self._local_headers if call.local_only else self._headers,
            timeout=self.timeout(t, t.first_token if call.stream else t.total),
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + t.total
        first_deadline = loop.time() + t.first_token if call.stream else deadline
        response: httpx.Response | None = None
        try:
            async with asyncio.timeout_at(min(first_deadline, deadline)):
                response = await self.client.send(request, stream=True)
                if response.status_code >= 300:
                    body = await response.aread()
                    raise from_status(
                        self.name, response.status_code, body, response.headers, self.secrets
                    )
                locality = self._locality(response, call)
                if not call.stream:
                    raw = self.secrets.scrub_bytes(await response.aread())
                    await response.aclose()
                    return UpstreamReply(raw, parse_json(self.name, raw), locality)
                rest = self._chunks(response, deadline)
                try:
                    first = await anext(rest)
                except StopAsyncIteration:
                    raise UpstreamBroken(
                        f"provider '{self.name}' ended its stream before any chunk"
                    ) from None
        except TimeoutError:
            await _close(response)
            phase = "first chunk" if call.stream else "answer"
            raise UpstreamTimeout(
                f"provider '{self.name}' sent no {phase} within "
                f"{min(t.first_token, t.total) if call.stream else t.total:g}s"
            ) from None
        except httpx.HTTPError as exc:
            await _close(response)
            raise from_httpx(self.name, exc, self.secrets) from None
        except BaseException:
            await _close(response)
            raise
        return UpstreamStream(first, rest, locality)

    def _locality(self, response: httpx.Response, call: Call) -> Locality:
        said = response.headers.get(LOCALITY)
        kind = self.locality
        if kind == "local":
            return "local"
        if kind == "verify":
            if call.local_only and said != "local":
                raise LocalityUnverified(
                    f"provider '{self.name}' did not confirm that it served the request "
                    "locally; a local-only answer from it is not used"
                )
            return "local" if said == "local" else "remote"
        return "remote"

    async def _chunks(self, response: httpx.Response, deadline: float) -> AsyncIterator[Chunk]:
        """The stream's chunks up to ``[DONE]``; a cut, an error event or the total
        timeout raise (the route turns that into an SSE error event)."""
        loop = asyncio.get_running_loop()
        finished = False
        try:
            async for event in sse_events(response.aiter_bytes()):
                raw = event.data
                if raw == b"[DONE]":
                    return
                raw = self.secrets.scrub_bytes(raw)
                data = parse_json(self.name, raw)
                if "error" in data and not data.get("choices"):
                    raise _stream_error(self.name, data["error"], self.secrets)
                yield Chunk(raw, data)
                choices = data.get("choices")
                if choices and isinstance(choices[0], dict) and choices[0].get("finish_reason"):
                    finished = True
                if loop.time() > deadline:
                    raise UpstreamTimeout(f"provider '{self.name}' exceeded its total timeout")
            if not finished:
                raise UpstreamBroken(f"provider '{self.name}' ended its stream mid-answer")
        except httpx.HTTPError as exc:
            if isinstance(exc, httpx.ReadTimeout):
                raise UpstreamTimeout(f"provider '{self.name}' went silent mid-stream") from None
            raise from_httpx(self.name, exc, self.secrets) from None
        finally:
            await response.aclose()

    async def verify_local(self, model: str, timeouts: Timeouts) -> bool:
        """Ask the upstream ocak whether it would serve ``model`` locally (cached a while)."""
        kind = self.locality
        if kind != "verify":
            return kind == "local"
        now = time.monotonic()
        if self._verified.get(model, 0.0) > now:
            return True
        try:
            response = await self.client.get(
                f"{self.url}/models/{model}",
                headers=self._local_headers,
                timeout=self.timeout(timeouts, timeouts.first_token),
            )
        except httpx.HTTPError:
            return False
        ok = response.status_code == 200 and response.headers.get(LOCALITY) == "local"
        if ok:
            self._verified[model] = now + self.locality_ttl
        else:
            self._verified.pop(model, None)
        return ok


def _stream_error(provider: str, error: Any, secrets: Any) -> OcakError:
    message = error.get("message") if isinstance(error, dict) else error
    return UpstreamBroken(f"provider '{provider}' failed mid-stream: {secrets.scrub(str(message))}")


async def _close(response: httpx.Response | None) -> None:
    if response is not None:
        await response.aclose()
