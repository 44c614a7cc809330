"""Model calls through the gateway: the router picks a target; local targets take the engine
path, remote ones pass OpenAI JSON through.

``dispatch`` runs the router with one attempt per target: for a local engine,
plan and prime the generation (the routes render its events as before); for a
provider, send the client's own JSON (target params filled in where the client
set none) and come back with the reply or a primed stream. Either way the
first chunk has arrived before the route answers, so the response's headers
can say which target served it (``x-ocak-backend``) and where it ran
(``x-ocak-locality``), and a failure up to then falls back to the next target.

A remote stream is forwarded chunk by chunk with the upstream's own bytes.
ocak asked for usage; the usage chunk is dropped when the client did not ask
for it. A failure once chunks have gone out ends the stream with an error event.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import Response, StreamingResponse
from starlette.requests import Request

from ocak.errors import OcakError
from ocak.gateway.router import Router, Served, Target
from ocak.gateway.service import Gateway
from ocak.protocol.openai import ChatCompletionRequest, CompletionRequest
from ocak.providers.base import (
    BACKEND,
    LOCALITY,
    REQUIRE_LOCALITY,
    Call,
    Endpoint,
    Locality,
    Upstream,
    UpstreamReply,
    UpstreamStream,
)
from ocak.providers.errors import TargetCannot
from ocak.server.auth import get_key
from ocak.server.state import AppState, get_state
from ocak.server.streaming import DONE, SSE_HEADERS, Primed, prime, sse_error
from ocak.server.tracking import RequestRecord, get_record
from ocak.structured.chat import ChatPlan

ModelRequest = ChatCompletionRequest | CompletionRequest


def gateway_of(state: AppState) -> Gateway:
    if state.gateway is None:  # an app built without one: the local engines only
        state.gateway = Gateway(Router({}, state.engines))
    return state.gateway


def wants_local(request: Request) -> bool:
    """A local-only request: its key says so, or the caller (another ocak) asks for it."""
    key = get_key(request)
    if key is not None and key.locality == "local":
        return True
    return request.headers.get(REQUIRE_LOCALITY, "").strip().lower() == "local"


def local_body(body: ModelRequest, target: Target) -> ModelRequest:
    """The request for the target's engine: its model id, and the target's params where the
    client set none."""
    assert target.engine is not None
    extra = body.model_extra or {}
    params = {
        k: v for k, v in target.params.items() if k not in body.model_fields_set and k not in extra
    }
    if not params:
        return body.model_copy(update={"model": target.engine})
    data = body.model_dump(exclude_unset=True)
    data.update(params, model=target.engine)
    return type(body).model_validate(data)


def remote_payload(raw: dict[str, Any], body: ModelRequest, target: Target) -> dict[str, Any]:
    """The client's JSON as sent, with the server's max_tokens cap and the target's params
    filled in where the client set none."""
    payload = dict(raw)
    if (
        body.max_tokens is not None
        and "max_tokens" not in payload
        and "max_completion_tokens" not in payload
    ):
        payload["max_tokens"] = body.max_tokens  # the server's default cap (admit)
    for k, v in target.params.items():
        payload.setdefault(k, v)
    return payload


async def dispatch(
    request: Request, body: ModelRequest, endpoint: Endpoint
) -> Served[Primed | Upstream]:
    """Serve ``body`` with the first target that answers (see module doc)."""
    state = get_state(request)
    record = get_record(request)
    local_only = wants_local(request)
    stream = bool(body.stream)
    raw: dict[str, Any] | None = None

    async def attempt(target: Target) -> tuple[Primed | Upstream, Locality]:
        nonlocal raw
        if target.engine is not None:
            engine = state.engines.get(target.engine)
            record.backend, record.locality = f"{engine.kind}:{engine.model_id}", "local"
            mine = local_body(body, target)
            plan = mine.plan() if isinstance(mine, ChatCompletionRequest) else None
            if plan is None:
                assert isinstance(mine, CompletionRequest)
                plan = ChatPlan(mine.to_generation_request())
            return await prime(plan.wrap(engine.generate(plan.request)), record), "local"
        assert target.provider is not None and target.model is not None
        record.backend, record.locality = target.name, None
        if raw is None:
            raw = await request.json()  # parsed once already by FastAPI, and cached
        call = Call(remote_payload(raw, body, target), endpoint, stream, target.timeouts)
        call.local_only = local_only
        reason = target.provider.unsupported(call)
        if reason is not None:
            raise TargetCannot(reason)
        upstream = await target.provider.send(target.model, call)
        return upstream, upstream.locality

    served = await gateway_of(state).router.run(body.model, attempt, local_only=local_only)
    record.locality = served.locality
    return served


def served_headers(served: Served[Any]) -> dict[str, str]:
    return {BACKEND: served.target.name, LOCALITY: served.locality}


def _count(record: RequestRecord, usage: Any) -> None:
    if isinstance(usage, dict):
        record.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        record.completion_tokens = int(usage.get("completion_tokens") or 0)


def upstream_response(
    upstream: Upstream, record: RequestRecord, include_usage: bool, headers: dict[str, str]
) -> Response:
    """The upstream's answer as ocak's response: its own JSON, or its stream forwarded."""
    if isinstance(upstream, UpstreamReply):
        record.first_token()
        _count(record, upstream.data.get("usage"))
        choices = upstream.data.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            record.finish_reason = choices[0].get("finish_reason")
        return Response(upstream.raw, media_type="application/json", headers=headers)
    return StreamingResponse(
        forward(upstream, record, include_usage),
        media_type="text/event-stream",
        headers={**SSE_HEADERS, **headers},
    )


async def forward(
    upstream: UpstreamStream, record: RequestRecord, include_usage: bool
) -> AsyncIterator[bytes]:
    """The upstream's chunks as SSE frames, as they arrive (what one read brought goes out in
    one write); usage counted, and dropped when the client did not ask for it; a failure
    becomes an error event."""
    try:
        async for batch in upstream.batches():
            frames: list[bytes] = []
            for chunk in batch.chunks:
                data = chunk.data
                raw = chunk.raw
                usage = data.get("usage")
                choices = data.get("choices")
                if usage:
                    _count(record, usage)
                    if not include_usage:
                        if not choices:
                            continue  # the usage chunk ocak asked for on its own account
                        stripped = dict(data)
                        del stripped["usage"]
                        raw = json.dumps(stripped, ensure_ascii=False).encode()
                if choices and isinstance(choices[0], dict):
                    first = choices[0]
                    if record.first_token_at is None:
                        delta = first.get("delta")
                        if first.get("text") or (
                            isinstance(delta, dict)
                            and (delta.get("content") or delta.get("tool_calls"))
                        ):
                            record.first_token()
                    if first.get("finish_reason"):
                        record.finish_reason = first["finish_reason"]
                frames.append(b"data: " + raw + b"\n\n")
            if batch.last:
                record.first_token()
                frames.append(DONE)  # the record is complete: sinks run before this write
                yield b"".join(frames)
                return
            if frames:
                yield b"".join(frames)
    except OcakError as exc:
        record.fail(exc.status, exc.code)
        yield sse_error(exc)
        return
    record.first_token()
    yield DONE
