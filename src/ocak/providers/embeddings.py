"""OpenAI's ``/embeddings`` on an OpenAI-compatible upstream: the client's JSON body in,
the upstream's JSON answer back as it wrote it (vectors relayed, never re-encoded).

Errors are translated where they enter, as for chat and audio; a loopback ocak upstream
proves it served locally with ``x-ocak-locality: local``. Providers of other APIs
(Replicate) have no embeddings: ``TargetCannot``, and the router tries the next target.
"""

from __future__ import annotations

import json
from typing import Any

from ocak.config.gateway import Timeouts
from ocak.providers.audio import UpstreamFile, compatible, post_whole
from ocak.providers.base import Provider


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
    headers = up.headers(local_only)
    return await post_whole(up, "/embeddings", body, headers, timeouts, local_only, "embeddings")
