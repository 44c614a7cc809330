"""What the app keeps in ``app.state``: injected at start-up, never module globals."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from ocak.config import Settings
from ocak.engines.registry import EngineRegistry
from ocak.server.tracking import Sink


@dataclass
class AppState:
    settings: Settings
    engines: EngineRegistry
    started: float = 0.0
    # Called with each request's record before its response ends (usage, metrics, logs).
    sinks: list[Sink] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.ocak
    return state
