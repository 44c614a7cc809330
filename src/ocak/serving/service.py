"""``ModelServing``: admission, routing, alias params and the record, once for every edge.

``serve`` runs the router with one attempt per target: for a local engine, the
body gets the target's engine id and the alias's params where the client set
none, is planned (tools, structured output) and primed; for a provider, the
client's own JSON (HTTP passes what it received; gRPC, what its client set) gets
the same params the same way and goes upstream. Either way the first chunk has
arrived before the edge answers, so a failure up to then falls back to the next
target, and the record says which backend served it and where it ran.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import MISSING, fields, replace
from typing import Any, TypeVar, cast

from ocak import telemetry
from ocak.config import Settings, parse_keep_alive
from ocak.engines.base import Engine
from ocak.engines.registry import AdapterFile, EngineRegistry
from ocak.engines.stream import Primed, prime
from ocak.errors import InvalidRequest, ModelNotFound, NotFound
from ocak.gateway.adapters import merge
from ocak.gateway.generation import chat_payload, remote_events
from ocak.gateway.router import Alias, LocalTarget, RemoteTarget, Router, Served, Target
from ocak.protocol.generation import GenerationEvent, GenerationRequest
from ocak.protocol.openai import ChatCompletionRequest, CompletionRequest
from ocak.protocol.record import RequestRecord
from ocak.providers.base import Call, Endpoint, Locality, Upstream, UpstreamReply
from ocak.providers.errors import TargetCannot
from ocak.serving import spans
from ocak.serving.admission import KeyChecks, ModelRequest, admit, admit_model
from ocak.serving.context import CallContext
from ocak.serving.knowledge import KnowledgeServing, Retrieval
from ocak.serving.prompts import PromptServing
from ocak.store.keys import KeyInfo
from ocak.structured.chat import plan_body, plan_completion

RawBody = Callable[[], Awaitable[dict[str, Any]]]
AdmittedT = TypeVar("AdmittedT", bound=ChatCompletionRequest | CompletionRequest)


def target_params(body: ModelRequest, target: Target) -> dict[str, Any]:
    """The target's (alias's) params for the fields the client did not set."""
    extra = body.model_extra or {}
    return {
        k: v for k, v in target.params.items() if k not in body.model_fields_set and k not in extra
    }


def local_body(body: ModelRequest, target: LocalTarget) -> ModelRequest:
    """The request for the target's engine: its model id, and the alias's params."""
    params = target_params(body, target)
    if not params:
        return body.model_copy(update={"model": target.engine})
    data = body.model_dump(exclude_unset=True)
    data.update(params, model=target.engine)
    return type(body).model_validate(data)


def local_sampling(settings: Settings, engine: Engine, body: ModelRequest) -> dict[str, Any]:
    """Samplers for what the client and the alias left unset: the model's own
    recommendation, else the server's defaults; only those the engine honours."""
    unset = engine.samplers - body.model_fields_set
    if not unset:
        return {}
    chosen = {str(k): v for k, v in settings.sampling_defaults.items()}
    chosen.update(engine.model_sampling())
    return {k: int(v) if k == "top_k" else float(v) for k, v in chosen.items() if k in unset}


def requested_keep_alive(body: ModelRequest) -> float | bool | None:
    """The request's own ``keep_alive`` (Ollama's field: how long its local model stays
    loaded afterwards); False when it sets none."""
    extra = body.model_extra or {}
    if "keep_alive" not in extra:
        return False
    try:
        return parse_keep_alive(extra["keep_alive"])
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="keep_alive") from None


def remote_payload(raw: dict[str, Any], body: ModelRequest, target: Target) -> dict[str, Any]:
    """The client's JSON, with the server's max_tokens cap and the alias's params (and not
    ``keep_alive`` or an empty ``adapters``, which are about this machine's models)."""
    payload = dict(raw)
    payload.pop("keep_alive", None)
    payload.pop("adapters", None)
    if (
        body.max_tokens is not None
        and "max_tokens" not in payload
        and "max_completion_tokens" not in payload
    ):
        payload["max_tokens"] = body.max_tokens  # the server's default cap (admission)
    for k, v in target_params(body, target).items():
        payload.setdefault(k, v)
    return payload


def backend_of(engine: Engine) -> str:
    """How usage records name a local engine: ``llama.cpp:default``."""
    return f"{engine.kind}:{engine.model_id}"


_GENERATION_DEFAULTS = {
    f.name: f.default for f in fields(GenerationRequest) if f.default is not MISSING
}


def generation_params(request: GenerationRequest, target: Target) -> GenerationRequest:
    """An engine-shaped request with the alias's params where the caller left the default
    (a ``GenerationRequest`` does not record what was set; a default value counts as unset)."""
    updates = {
        k: v
        for k, v in target.params.items()
        if k in _GENERATION_DEFAULTS and getattr(request, k) == _GENERATION_DEFAULTS[k]
    }
    return replace(request, **updates) if updates else request


OnServed = Callable[[Served[Any]], None]


def _name(found: Alias | Engine | AdapterFile) -> str:
    return found.model_id if isinstance(found, Engine) else found.name


def no_adapters(target: RemoteTarget, names: list[str]) -> None:
    """A remote target cannot apply this machine's adapters: the router goes on to the next
    target (``TargetCannot``)."""
    if names:
        raise TargetCannot(
            f"LoRA adapters ({', '.join(names)}) apply to this machine's "
            f"llama.cpp models; {target.name} is a remote provider",
            param="adapters",
        )


async def send(
    target: RemoteTarget,
    payload: dict[str, Any],
    endpoint: Endpoint,
    stream: bool,
    local_only: bool,
) -> Upstream:
    """``payload`` to a remote target's provider, unless the provider says it cannot take it
    (``TargetCannot``: the router goes on to the next target)."""
    call = Call(payload, endpoint, stream, target.timeouts, local_only)
    reason = target.provider.unsupported(call)
    if reason is not None:
        raise TargetCannot(reason)
    return await target.provider.send(target.model, call)


class ModelServing:
    """The one entry for model requests (see the module doc)."""

    def __init__(
        self,
        settings: Settings,
        keys: KeyChecks,
        engines: EngineRegistry,
        router: Router,
        knowledge: KnowledgeServing | None = None,
        prompts: PromptServing | None = None,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.engines = engines
        self.router = router
        self.knowledge = knowledge  # retrieval into chat requests that name knowledge bases
        self.prompts = prompts  # registry prompts rendered into chat requests that name one

    def retrieval(self, body: ModelRequest) -> Retrieval | None:
        """What the request (its ``knowledge`` field) or its alias asks to retrieve."""
        extra = body.model_extra or {}
        alias = self.router.aliases.get(body.model)
        if "knowledge" in extra:
            asked: Retrieval | None = Retrieval.parse(extra["knowledge"])
        elif alias is not None and alias.knowledge:
            asked = Retrieval(list(alias.knowledge))
        else:
            return None
        if not isinstance(body, ChatCompletionRequest):
            raise InvalidRequest("knowledge applies to chat requests.", param="knowledge")
        if self.knowledge is None:
            raise InvalidRequest("This server has no knowledge bases.", param="knowledge")
        return asked

    def admit(self, ctx: CallContext, body: AdmittedT) -> AdmittedT:
        """A chat request's registry prompt rendered (404, 400), then key permission, input
        caps, valid Unicode, limits (403, 400, 429); the request to serve is returned.
        When traced, the request's ``chat {model}`` span begins here (serving/spans.py)."""
        ctx.span = spans.model_call(body)
        with telemetry.active(ctx.span), telemetry.span("admission"):
            if isinstance(body, ChatCompletionRequest) and body.prompt is not None:
                if self.prompts is None:
                    raise InvalidRequest("This server has no prompt registry.", param="prompt")
                body = cast(AdmittedT, self.prompts.apply(ctx, body))
            admit(self.settings, self.keys, ctx, body)
        spans.admitted(ctx.span, body)
        return body

    def authorize(self, ctx: CallContext, model: str) -> None:
        """For calls whose body is not OpenAI's (character turns): permission and limits."""
        admit_model(self.keys, ctx, model)

    async def serve(
        self, ctx: CallContext, body: ModelRequest, endpoint: Endpoint, raw: RawBody | None = None
    ) -> Served[Primed | Upstream]:
        """Serve an admitted ``body`` with the first target that answers."""
        record = ctx.record
        record.stream = bool(body.stream)
        if ctx.prompt is not None:
            raw = None  # the rendered messages go upstream, not the client's JSON
        asked = self.retrieval(body)
        if asked is not None and isinstance(body, ChatCompletionRequest):
            assert self.knowledge is not None
            with telemetry.active(ctx.span):
                body, ctx.retrieved = await self.knowledge.augment(ctx, body, asked)
            raw = None  # the prompt with the chunks goes upstream, not the client's JSON
        client_json: dict[str, Any] | None = None
        keep_alive = requested_keep_alive(body)

        async def attempt(target: Target) -> tuple[Primed | Upstream, Locality]:
            nonlocal client_json
            if isinstance(target, LocalTarget):
                mine = local_body(body, target)
                if isinstance(mine, ChatCompletionRequest):
                    plan = plan_body(mine)
                else:
                    plan = plan_completion(mine)
                request = self.with_adapters(plan.request, target)
                engine = await self.engines.acquire(target.engine, keep_alive=keep_alive)
                defaults = local_sampling(self.settings, engine, mine)
                if request.max_tokens is None and self.settings.local_max_tokens:
                    defaults["soft_max_tokens"] = self.settings.local_max_tokens
                request = replace(request, **defaults) if defaults else request
                record.backend, record.locality = backend_of(engine), "local"
                events = self.engines.held(target.engine, engine.generate(request))
                return await prime(plan.wrap(events), record), "local"
            no_adapters(target, [a.name for a in body.adapters or ()])
            record.backend, record.locality = target.name, None
            if client_json is None:
                client_json = await raw() if raw else body.model_dump(exclude_unset=True)
            payload = remote_payload(client_json, body, target)
            upstream = await send(target, payload, endpoint, bool(body.stream), ctx.local_only)
            return upstream, upstream.locality

        with telemetry.active(ctx.span):  # the attempts are the request span's children
            session = ctx.session or getattr(body, "user", None)
            served = await self.router.run(
                body.model, attempt, local_only=ctx.local_only, session=session
            )
        record.locality = served.locality
        spans.served(ctx.span, self.router, served)
        return served

    async def events(
        self, result: Primed | Upstream, record: RequestRecord | None = None
    ) -> Primed:
        """A served result as engine events, for callers that do not pass upstream JSON on
        (gRPC, character turns); a remote stream's events fill ``record``."""
        if isinstance(result, Primed):
            return result
        if isinstance(result, UpstreamReply):  # pragma: no cover - such callers ask for streams
            raise TargetCannot("the provider answered a stream request with one reply")
        return await prime(remote_events(result), record)

    async def generate(
        self,
        request: GenerationRequest,
        *,
        local_only: bool = False,
        on_served: OnServed | None = None,
    ) -> AsyncIterator[GenerationEvent]:
        """Engine events for an engine-shaped request (character turns, summaries), from the
        first target that answers, with the alias's params applied as in ``serve``."""

        async def attempt(target: Target) -> tuple[Primed | Upstream, Locality]:
            mine = generation_params(request, target)
            if isinstance(target, LocalTarget):
                local = replace(self.with_adapters(mine, target), model=target.engine)
                return await prime(self.engines.generate(target.engine, local)), "local"
            no_adapters(target, [a.name for a in mine.adapters])
            payload = chat_payload(mine)
            for k, v in target.params.items():  # provider-specific ones (Replicate's input)
                if k not in _GENERATION_DEFAULTS:
                    payload.setdefault(k, v)
            upstream = await send(target, payload, "chat", True, local_only)
            return upstream, upstream.locality

        served = await self.router.run(
            request.model, attempt, local_only=local_only, session=request.session
        )
        if on_served is not None:
            on_served(served)
        primed = await self.events(served.result)
        async for event in primed.events():
            yield event

    def tokenizer_of(self, ctx: CallContext, model: str) -> str:
        """The local engine whose tokenizer counts for ``model`` (an alias's first local
        target, or the engine of that id); the key must allow the model. A model served only
        remotely has no tokenizer here: 400 rather than a guess."""
        ctx.record.model = model
        self.keys.permit(ctx.key, model)
        alias = self.router.aliases.get(model)
        if alias is None:
            if self.engines.find(model) is None:
                raise ModelNotFound(model)
            return model
        for target in alias.targets:
            if isinstance(target, LocalTarget):
                return target.engine
        raise InvalidRequest(
            f"'{model}' is served by remote providers only; ocak tokenizes with local "
            "models' own tokenizers.",
            param="model",
        )

    async def tokenize(
        self, ctx: CallContext, model: str, text: str, *, add_special: bool = False
    ) -> list[int]:
        """``text`` as ``model``'s token ids, off the event loop (prompts can be long)."""
        name = self.tokenizer_of(ctx, model)
        engine = await self.engines.acquire(name)
        try:
            return await asyncio.to_thread(engine.tokenize, text, add_special=add_special)
        finally:
            self.engines.release(name)

    async def detokenize(self, ctx: CallContext, model: str, ids: list[int]) -> str:
        """The text of ``model``'s token ids."""
        name = self.tokenizer_of(ctx, model)
        engine = await self.engines.acquire(name)
        try:
            return await asyncio.to_thread(engine.detokenize, ids)
        finally:
            self.engines.release(name)

    def with_adapters(self, request: GenerationRequest, target: LocalTarget) -> GenerationRequest:
        """``request`` with the LoRA adapters its model name and its ``adapters`` field ask
        for, each with its file from the store; 404 for one the store does not have."""
        chosen = merge(target.adapters, request.adapters)
        if not chosen:
            return request
        stored_files = {a.name: a for a in self.engines.adapters()}  # one look at the store
        found = []
        for adapter in chosen:
            stored = stored_files.get(adapter.name)
            if stored is None:
                raise NotFound(
                    f"No LoRA adapter '{adapter.name}' in the model store "
                    "(`ocak models list` shows them; `ocak models add FILE` stores one).",
                    param="adapters",
                    code="adapter_not_found",
                )
            found.append(replace(adapter, path=str(stored.path)))
        return replace(request, adapters=tuple(found))

    def served_backend(self, served: Served[Any]) -> tuple[str, Locality]:
        """The usage record's backend and locality for the target that served."""
        target = served.target
        engine = self.engines.find(target.engine) if isinstance(target, LocalTarget) else None
        return (backend_of(engine) if engine else target.name), served.locality

    def models(self, key: KeyInfo | None) -> list[Alias | Engine | AdapterFile]:
        """What this server answers for: aliases, local engines, then the store's LoRA
        adapters; only a key's own."""
        aliases = self.router.aliases
        found: list[Alias | Engine | AdapterFile] = list(aliases.values())
        found += [e for e in self.engines if e.model_id not in aliases]
        found += self.engines.adapters()
        if key is not None:
            found = [m for m in found if key.allows(_name(m))]
        return found
