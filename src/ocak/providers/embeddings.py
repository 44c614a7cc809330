"""OpenAI's ``/embeddings`` on an OpenAI-compatible upstream: the client's JSON body in,
the upstream's JSON answer back as it wrote it (vectors relayed, never re-encoded).

Errors are translated where they enter, as for chat and audio; a loopback ocak upstream
proves it served locally with ``x-ocak-locality: local``. Providers of other APIs
(Replicate) have no embeddings: ``TargetCannot``, and the router tries the next target.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from ocak.config.gateway import Timeouts
from ocak.providers.audio import UpstreamFile, check_status, compatible
from ocak.providers.base import Provider
from ocak.providers.errors import TRANSPORT_ERRORS, from_transport


async def embeddings(
    provider: Provider,
    model: str,
    payload: dict[str, Any],
    timeouts: Timeouts,
    local_only: bool,
) -> UpstreamFile:
    """POST ``payload`` (OpenAI's embeddings body) with the upstream's ``model``."""
    up = compatible(provider, "embeddings")
    body = json.dumps({**payload, "model": model}, ensure_ascii=False).encode()
    response: aiohttp.ClientResponse | None = None
    try:
        async with asyncio.timeout(timeouts.total):
            response = await up.session.post(
                up.url + "/embeddings",
                data=body,
                headers=up.headers(local_only),
                timeout=up.timeout(timeouts, timeouts.total),
                allow_redirects=False,
                proxy=up.proxy,
            )
            await check_status(up, response)
            locality = up.answered_locality(response, local_only)
            raw = up.secrets.scrub_bytes(await response.read())
            media = response.headers.get("content-type", "application/json")
    except TRANSPORT_ERRORS as exc:
        missed = f"sent no embeddings within {timeouts.total:g}s"
        raise from_transport(up.name, exc, up.secrets, missed=missed) from None
    finally:
        if response is not None:
            response.close()
    return UpstreamFile(raw, media, locality)
