"""OpenAI's audio endpoints on an OpenAI-compatible upstream: ``/audio/speech`` (JSON in,
audio bytes streamed back) and ``/audio/transcriptions`` (a multipart upload in, the
transcript in the format asked for back).

As for chat, a speech stream comes back *primed* (its first bytes have arrived), so a
failure up to then can still fall back to another target; errors are translated where
they enter (``from_status``, ``from_transport``), and a loopback ocak upstream proves
that it served locally with ``x-ocak-locality: local``. Providers of other APIs
(Replicate) have no audio: ``TargetCannot``, and the router tries the next target.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from ocak.config.gateway import Timeouts
from ocak.providers.base import Locality, Provider
from ocak.providers.errors import (
    TRANSPORT_ERRORS,
    TargetCannot,
    UpstreamBroken,
    UpstreamTimeout,
    from_status,
    from_transport,
)
from ocak.providers.openai_compat import OpenAICompatible

_READ = 64 * 1024


@dataclass(frozen=True, slots=True)
class AudioUpload:
    """The client's audio file, as it arrived (sent on unchanged)."""

    data: bytes
    filename: str = "audio"
    content_type: str | None = None


@dataclass(slots=True)
class UpstreamAudio:
    """A speech stream whose first bytes have arrived."""

    first: bytes
    rest: AsyncIterator[bytes]
    media_type: str
    locality: Locality
    _closed: bool = field(default=False, repr=False)

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            yield self.first
            async for chunk in self.rest:
                yield chunk
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            close = getattr(self.rest, "aclose", None)
            if close is not None:
                await close()


@dataclass(frozen=True, slots=True)
class UpstreamFile:
    """A whole answer that need not be JSON (a transcript as text, SRT or VTT)."""

    raw: bytes
    media_type: str
    locality: Locality


def compatible(provider: Provider, what: str) -> OpenAICompatible:
    if not isinstance(provider, OpenAICompatible):
        raise TargetCannot(f"provider '{provider.name}' has no {what} API (OpenAI-compatible only)")
    return provider


async def speech(
    provider: Provider,
    model: str,
    payload: dict[str, Any],
    timeouts: Timeouts,
    local_only: bool,
) -> UpstreamAudio:
    """POST ``payload`` (OpenAI's speech body) to the upstream's ``/audio/speech``; the
    audio streams back as it arrives."""
    up = compatible(provider, "speech")
    body = json.dumps({**payload, "model": model}, ensure_ascii=False).encode()
    t = timeouts
    loop = asyncio.get_running_loop()
    deadline = loop.time() + t.total
    response: aiohttp.ClientResponse | None = None
    try:
        async with asyncio.timeout_at(min(loop.time() + t.first_token, deadline)):
            response = await up.session.post(
                up.url + "/audio/speech",
                data=body,
                headers=up.headers(local_only),
                timeout=up.timeout(t, t.first_token),
                allow_redirects=False,
                proxy=up.proxy,
            )
            await check_status(up, response)
            locality = up.answered_locality(response, local_only)
            rest = _bytes(up, response, deadline)
            first = b""
            while not first:  # an empty read is not yet audio
                try:
                    first = await anext(rest)
                except StopAsyncIteration:
                    raise UpstreamBroken(f"provider '{up.name}' sent no audio") from None
    except TRANSPORT_ERRORS as exc:
        _close(response)
        missed = f"sent no audio within {min(t.first_token, t.total):g}s"
        raise from_transport(up.name, exc, up.secrets, missed=missed) from None
    except BaseException:
        _close(response)
        raise
    media = response.headers.get("content-type", "application/octet-stream")
    return UpstreamAudio(first, rest, media, locality)


async def transcription(
    provider: Provider,
    model: str,
    fields: dict[str, str | list[str]],
    upload: AudioUpload,
    timeouts: Timeouts,
    local_only: bool,
) -> UpstreamFile:
    """POST the upload and the form ``fields`` to the upstream's ``/audio/transcriptions``;
    the whole answer comes back as the upstream wrote it."""
    up = compatible(provider, "transcription")
    form = aiohttp.FormData()
    form.add_field("file", upload.data, filename=upload.filename, content_type=upload.content_type)
    form.add_field("model", model)
    for name, value in fields.items():
        for one in [value] if isinstance(value, str) else value:
            form.add_field(name, one)
    headers = {k: v for k, v in up.headers(local_only).items() if k != "content-type"}
    return await post_whole(
        up, "/audio/transcriptions", form, headers, timeouts, local_only, "transcript"
    )


async def post_whole(
    up: OpenAICompatible,
    path: str,
    data: aiohttp.FormData | bytes,
    headers: dict[str, str],
    timeouts: Timeouts,
    local_only: bool,
    what: str,
) -> UpstreamFile:
    """POST ``data`` to the upstream's ``path`` and read its whole answer, as it wrote it
    (a transcript, embeddings); ``what`` names the answer in a timeout's message."""
    response: aiohttp.ClientResponse | None = None
    try:
        async with asyncio.timeout(timeouts.total):
            response = await up.session.post(
                up.url + path,
                data=data,
                headers=headers,
                timeout=up.timeout(timeouts, timeouts.total),
                allow_redirects=False,
                proxy=up.proxy,
            )
            await check_status(up, response)
            locality = up.answered_locality(response, local_only)
            raw = up.secrets.scrub_bytes(await response.read())
            media = response.headers.get("content-type", "application/json")
    except TRANSPORT_ERRORS as exc:
        missed = f"sent no {what} within {timeouts.total:g}s"
        raise from_transport(up.name, exc, up.secrets, missed=missed) from None
    finally:
        _close(response)
    return UpstreamFile(raw, media, locality)


async def check_status(up: OpenAICompatible, response: aiohttp.ClientResponse) -> None:
    if response.status >= 300:
        body = await response.read()
        raise from_status(up.name, response.status, body, response.headers, up.secrets)


async def _bytes(
    up: OpenAICompatible, response: aiohttp.ClientResponse, deadline: float
) -> AsyncIterator[bytes]:
    """The body as the network delivers it; a cut or the total timeout raise."""
    loop = asyncio.get_running_loop()
    try:
        async for chunk in response.content.iter_chunked(_READ):
            yield chunk
            if loop.time() > deadline:
                raise UpstreamTimeout(f"provider '{up.name}' exceeded its total timeout")
    except TRANSPORT_ERRORS as exc:
        if isinstance(exc, TimeoutError):
            raise UpstreamTimeout(f"provider '{up.name}' went silent mid-audio") from None
        raise from_transport(up.name, exc, up.secrets) from None
    finally:
        response.close()


def _close(response: aiohttp.ClientResponse | None) -> None:
    if response is not None:
        response.close()
