"""``ocak.v1.Ocak``: Generate, Chat and ListModels over the app's engines.

Each call is handled like an HTTP request: it gets a request id (the client's
``x-request-id`` metadata or a new one, sent back as initial metadata), passes
the auth hook, and fills a ``RequestRecord`` that the app's sinks (usage store,
metrics, request log) receive before the call's status is sent.

Streams are written with ``context.write`` from a coroutine, so a client that
cancels its call (or whose deadline passes) cancels the handler at its await,
and the engine's iterator is closed there: the generation stops and its slot is
freed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc import aio

from ocak.errors import OcakError, Unavailable
from ocak.gateway.generation import RoutedModel, served_backend
from ocak.gateway.router import Served
from ocak.grpc import convert
from ocak.grpc.auth import admit, authenticate, bearer_token
from ocak.grpc.status import status_code, trailers
from ocak.grpc.v1 import ocak_pb2 as pb
from ocak.protocol.generation import Finished, GenerationEvent, GenerationRequest, TextDelta
from ocak.protocol.openai import ChatCompletionRequest, CompletionRequest
from ocak.server.proxy import gateway_of
from ocak.server.state import AppState
from ocak.server.streaming import prime
from ocak.server.tracking import RequestRecord, run_sinks
from ocak.store.keys import KeyInfo

log = logging.getLogger("ocak.grpc")

SERVICE = pb.DESCRIPTOR.services_by_name["Ocak"].full_name  # "ocak.v1.Ocak"
Context = aio.ServicerContext[Any, Any]
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
Events = AsyncIterator[GenerationEvent]


@dataclass(slots=True)
class Call:
    """One call in progress: its record and the key it came with (None without keys)."""

    record: RequestRecord
    key: KeyInfo | None

    @property
    def local_only(self) -> bool:
        """The call must not leave this machine: its key says so."""
        return self.key is not None and self.key.locality == "local"


class OcakServicer:
    """The service's handlers, bound to one app's state (engines, sinks, auth hook)."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.closing = False
        self._calls: set[asyncio.Task[Any]] = set()

    # -- the RPCs ---------------------------------------------------------------

    async def Generate(self, request: pb.GenerateRequest, context: Context) -> None:
        async with self._call(context, "Generate", request.model, stream=True) as call:
            body = convert.completion_request(request)
            self._admit(call, body)
            await self._stream(
                context,
                call,
                body.to_generation_request(),
                piece=lambda text: pb.GenerateResponse(text=text),
                final=lambda reason, usage: pb.GenerateResponse(finish_reason=reason, usage=usage),
            )

    async def Chat(self, request: pb.ChatRequest, context: Context) -> None:
        async with self._call(context, "Chat", request.model, stream=True) as call:
            body = convert.chat_request(request)
            self._admit(call, body)
            await self._stream(
                context,
                call,
                body.to_generation_request(),
                piece=lambda text: pb.ChatResponse(content=text),
                final=lambda reason, usage: pb.ChatResponse(finish_reason=reason, usage=usage),
            )

    async def ListModels(
        self, request: pb.ListModelsRequest, context: Context
    ) -> pb.ListModelsResponse:
        async with self._call(context, "ListModels", None, stream=False):
            return pb.ListModelsResponse(models=[convert.model(e) for e in self.state.engines])

    # -- shared machinery -------------------------------------------------------

    def _admit(self, call: Call, body: ChatCompletionRequest | CompletionRequest) -> None:
        """As HTTP's ``admit``: the key may use the model, input caps, the key's limits."""
        call.record.model = body.model
        admit(self.state, call.key, body)

    def _generate(self, call: Call, generation: GenerationRequest) -> Events:
        """A local engine's events, or an alias's through the gateway's router (fallback,
        breaker, local-only), as HTTP serves them."""
        record = call.record
        router = gateway_of(self.state).router
        if router.resolve(generation.model).direct:  # NOT_FOUND for an unknown name
            engine = self.state.engines.get(generation.model)
            record.backend, record.locality = f"{engine.kind}:{engine.model_id}", "local"
            return engine.generate(generation)

        def served(result: Served[Any]) -> None:
            record.backend, record.locality = served_backend(result, self.state.engines)

        routed = RoutedModel(router, self.state.engines, generation.model)
        return routed.generate(generation, local_only=call.local_only, on_served=served)

    async def _stream(
        self,
        context: Context,
        call: Call,
        generation: GenerationRequest,
        *,
        piece: Callable[[str], Any],
        final: Callable[[pb.FinishReason.ValueType, pb.Usage], Any],
    ) -> None:
        """The one streaming path: prime (admission errors raise here), then write a message
        per piece of text and a last one with the finish reason and usage."""
        primed = await prime(self._generate(call, generation), call.record)
        async for event in primed.events():
            if isinstance(event, TextDelta):
                await context.write(piece(event.text))
            elif isinstance(event, Finished):
                reason = convert.finish_reason(event.reason)
                await context.write(final(reason, convert.usage(event.usage)))

    @contextlib.asynccontextmanager
    async def _call(
        self, context: Context, method: str, model: str | None, *, stream: bool
    ) -> AsyncIterator[Call]:
        """Track one call: id, auth, record, error status, sinks; cancellation propagates."""
        metadata = tuple(context.invocation_metadata() or ())
        given = next((str(v) for k, v in metadata if k == "x-request-id"), "")
        request_id = given if _REQUEST_ID.match(given) else f"req_{uuid.uuid4().hex[:20]}"
        record = RequestRecord(request_id, "GRPC", f"/{SERVICE}/{method}")
        record.model = model or None
        record.stream = stream
        failure: OcakError | None = None
        task = asyncio.current_task()
        if task is not None:
            self._calls.add(task)
        try:
            await context.send_initial_metadata((("x-request-id", request_id),))
            if self.closing:
                raise Unavailable("The server is shutting down.", retry_after=1.0)
            key = authenticate(self.state, bearer_token(metadata), record)
            yield Call(record, key)
        except OcakError as exc:
            if exc.status >= 500:
                log.warning("gRPC %s failed: %s", method, exc.message)
            failure = exc
        except asyncio.CancelledError:
            # The client cancelled, its deadline passed, or the server is stopping.
            if record.status == "completed":
                record.status = "cancelled"
            raise
        except Exception:
            if context.done():  # writing to a call the client already left
                record.status = "cancelled"
            else:
                log.exception("unexpected error in gRPC %s", method)
                failure = OcakError("The server had an internal error. See its log.")
        finally:
            if task is not None:
                self._calls.discard(task)
            if failure is not None:
                record.fail(failure.status, failure.code)
            self._finish(record)  # before the status goes out, as HTTP does before its last byte
        if failure is not None:
            await context.abort(status_code(failure), failure.message, trailers(failure))

    def _finish(self, record: RequestRecord) -> None:
        record.ended = time.monotonic()
        run_sinks([*self.state.sinks, *self.state.late_sinks], record)

    async def drain(self, timeout: float) -> None:
        """Refuse new calls (UNAVAILABLE) and wait up to ``timeout`` for running ones."""
        self.closing = True
        running = {t for t in self._calls if not t.done()}
        if running:
            await asyncio.wait(running, timeout=timeout)


def handlers(servicer: OcakServicer) -> grpc.GenericRpcHandler:
    """The service's method handlers (registered by hand: the handlers are coroutines)."""

    def stream(
        behaviour: Callable[[Any, Context], Awaitable[None]], request: Any, response: Any
    ) -> grpc.RpcMethodHandler[Any, Any]:
        return grpc.unary_stream_rpc_method_handler(
            behaviour,
            request_deserializer=request.FromString,
            response_serializer=response.SerializeToString,
        )

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Generate": stream(servicer.Generate, pb.GenerateRequest, pb.GenerateResponse),
            "Chat": stream(servicer.Chat, pb.ChatRequest, pb.ChatResponse),
            "ListModels": grpc.unary_unary_rpc_method_handler(
                servicer.ListModels,
                request_deserializer=pb.ListModelsRequest.FromString,
                response_serializer=pb.ListModelsResponse.SerializeToString,
            ),
        },
    )
