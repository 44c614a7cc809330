"""What the app keeps in ``app.state``: injected at start-up, never module globals."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import Request

from ocak.config import Settings
from ocak.engines.registry import EngineRegistry
from ocak.protocol.record import Sink
from ocak.server.auth import Authenticator
from ocak.store.db import Database

if TYPE_CHECKING:
    from ocak.gateway.service import Gateway
    from ocak.server.metrics import Metrics
    from ocak.serving.service import ModelServing


@dataclass
class AppState:
    settings: Settings
    engines: EngineRegistry
    started: float = 0.0
    # Called with each request's record before its response ends (usage, metrics, logs).
    sinks: list[Sink] = field(default_factory=list)  # before a response's last byte
    late_sinks: list[Sink] = field(default_factory=list)  # right after it
    # Keys and limits: ``auth.check(token, model)`` is the hook for every edge.
    auth: Authenticator = field(default_factory=Authenticator)
    db: Database | None = None  # the usage/keys store, when the server has one
    metrics: Metrics | None = None
    # Aliases, providers and the router over them and the engines (issue 5).
    gateway: Gateway | None = None
    # The one entry for model requests (built by create_app once auth and gateway exist).
    serving: ModelServing | None = None
    extras: dict[str, Any] = field(default_factory=dict)


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.ocak
    return state


def serving_of(state: AppState) -> ModelServing:
    """The app's serving layer (every app built by create_app has one)."""
    assert state.serving is not None, "the app was built without create_app"
    return state.serving
