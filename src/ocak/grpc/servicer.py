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
from typing import Any

import grpc
from grpc import aio

from ocak.errors import OcakError, Unavailable
from ocak.grpc import convert
from ocak.grpc.auth import authenticate, bearer_token
from ocak.grpc.status import status_code, trailers
from ocak.grpc.v1 import ocak_pb2 as pb
from ocak.protocol.generation import Finished, TextDelta
from ocak.protocol.openai import ChatCompletionRequest, CompletionRequest
from ocak.protocol.record import RequestRecord, run_sinks
from ocak.providers.base import Endpoint
from ocak.server.services import Services
from ocak.serving.context import CallContext

log = logging.getLogger("ocak.grpc")

SERVICE = pb.DESCRIPTOR.services_by_name["Ocak"].full_name  # "ocak.v1.Ocak"
Context = aio.ServicerContext[Any, Any]
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class OcakServicer:
    """The service's handlers, bound to one app's state (engines, sinks, auth hook)."""

    def __init__(self, state: Services) -> None:
        self.state = state
        self.closing = False
        self._calls: set[asyncio.Task[Any]] = set()

    # -- the RPCs ---------------------------------------------------------------

    async def Generate(self, request: pb.GenerateRequest, context: Context) -> None:
        async with self._call(context, "Generate", request.model, stream=True) as call:
            await self._stream(
                context,
                call,
                convert.completion_request(request),
                "completions",
                piece=lambda text: pb.GenerateResponse(text=text),
                final=lambda reason, usage: pb.GenerateResponse(finish_reason=reason, usage=usage),
            )

    async def Chat(self, request: pb.ChatRequest, context: Context) -> None:
        async with self._call(context, "Chat", request.model, stream=True) as call:
            await self._stream(
                context,
                call,
                convert.chat_request(request),
                "chat",
                piece=lambda text: pb.ChatResponse(content=text),
                final=lambda reason, usage: pb.ChatResponse(finish_reason=reason, usage=usage),
            )

    async def ListModels(
        self, request: pb.ListModelsRequest, context: Context
    ) -> pb.ListModelsResponse:
        """What HTTP's ``GET /v1/models`` lists: aliases, engines, adapters, speech and
        embedding models, only a key's own."""
        async with self._call(context, "ListModels", None, stream=False) as call:
            found = self.state.serving.models(call.key)
            speech = self.state.audio.models(call.key)
            embedders = self.state.embeddings.models(call.key)
            listed = [*found, *speech, *embedders]
            return pb.ListModelsResponse(models=[convert.model(m) for m in listed])

    # -- shared machinery -------------------------------------------------------

    async def _stream(
        self,
        context: Context,
        call: CallContext,
        body: ChatCompletionRequest | CompletionRequest,
        endpoint: Endpoint,
        *,
        piece: Callable[[str], Any],
        final: Callable[[pb.FinishReason.ValueType, pb.Usage], Any],
    ) -> None:
        """Through the serving layer as HTTP is (admission, alias params, fallback), then a
        message per piece of text and a last one with the finish reason and usage."""
        serving = self.state.serving
        serving.admit(call, body)
        body.stream = True  # a gRPC answer is always a stream
        served = await serving.serve(call, body, endpoint)
        primed = await serving.events(served.result, call.record)
        async for event in primed.events():
            if isinstance(event, TextDelta):
                await context.write(piece(event.text))
            elif isinstance(event, Finished):
                reason = convert.finish_reason(event.reason)
                await context.write(final(reason, convert.usage(event.usage)))

    @contextlib.asynccontextmanager
    async def _call(
        self, context: Context, method: str, model: str | None, *, stream: bool
    ) -> AsyncIterator[CallContext]:
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
            yield CallContext(record, key)
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
