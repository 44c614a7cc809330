"""The gRPC server: ``ocak.v1.Ocak``, ``grpc.health.v1.Health`` and server reflection.

It runs on the HTTP server's event loop, over the same ``Services`` (engines,
sinks, auth hook), bound to the same host. The app's lifespan starts it before
the models load and calls ``engines_changed`` once they have: health reports
NOT_SERVING while loading and SERVING once a model is ready (as ``/health``
answers 503 then 200), for the whole server (``""``) and for ``ocak.v1.Ocak``.
On shutdown health turns NOT_SERVING, new calls are refused with UNAVAILABLE,
running ones get ``grace`` seconds to finish, and the rest are cancelled (which
frees their slots) before the engines close.
"""

from __future__ import annotations

import logging
import socket

from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from ocak.grpc.servicer import SERVICE, OcakServicer, handlers
from ocak.server.services import Services

log = logging.getLogger("ocak.grpc")

HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def listen_address(host: str, port: int) -> str:
    """``host:port`` for gRPC, with an IPv6 literal in brackets."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def port_problem(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be bound now (a plain bind, as a second server's would be),
    or None. Checked before start-up so a taken port is one clear line, not a traceback."""
    if port == 0:
        return None
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


class GrpcServer:
    """One grpc.aio server for an app; ``start``, ``engines_changed``, ``stop``."""

    def __init__(self, state: Services, host: str, port: int, *, grace: float = 10.0) -> None:
        self.state = state
        self.host = host
        self.requested_port = port
        self.port: int | None = None
        self.grace = grace
        self.servicer = OcakServicer(state)
        self.health = HealthServicer()
        limit = state.settings.max_body_bytes  # the same cap on a request as HTTP's body limit
        self.server = aio.server(
            options=[
                # Off: a port already in use must fail here, not be shared.
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", limit),
            ]
        )

    async def start(self) -> None:
        """Bind and serve; health is NOT_SERVING until ``engines_changed`` finds a ready model."""
        await self.engines_changed()
        self.server.add_generic_rpc_handlers((handlers(self.servicer),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME), self.server
        )
        address = listen_address(self.host, self.requested_port)
        try:
            port = self.server.add_insecure_port(address)
        except RuntimeError as exc:  # grpcio raises when it cannot bind
            raise OSError(f"cannot listen for gRPC on {address}: {exc}") from exc
        if not port:
            raise OSError(f"cannot listen for gRPC on {address}")
        self.port = port
        await self.server.start()
        log.info("gRPC listening on %s (service %s)", listen_address(self.host, port), SERVICE)

    async def engines_changed(self) -> None:
        """Follow the engines' state: SERVING when none is loading and one is ready."""
        engines = self.state.engines
        status = SERVING if engines.servable and not engines.loading else NOT_SERVING
        for service in ("", SERVICE):
            await self.health.set(service, status)

    async def stop(self) -> None:
        await self.health.enter_graceful_shutdown()
        await self.servicer.drain(self.grace)
        await self.server.stop(0)
