"""An in-process app on the scripted fake engine, with real SQLite files, for API tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from ocak.config import Settings
from ocak.engines.base import Engine
from ocak.engines.fake import FakeEngine
from ocak.engines.registry import EngineRegistry
from ocak.server.app import create_app
from ocak.store.db import open_database
from ocak.store.keys import create_key
from paths import EXAMPLES

BRAM = EXAMPLES / "characters" / "bram.yaml"
# A valid character packet, whatever the fake engine is asked.
PACKET = json.dumps(
    {
        "text": "Aye, {word}.",
        "narration": "",
        "emotion": {"label": "neutral", "strength": 2},
        "actions": [],
        "relationship": {"trust": 1, "respect": 0, "familiarity": 1},
    }
)
Check = Callable[[httpx.AsyncClient], Awaitable[None]]


@dataclass
class Served:
    """An app started in-process: a client calling it (with the key's header when a key was
    made) and the key's token ("" without one)."""

    app: FastAPI
    client: httpx.AsyncClient
    token: str


@contextlib.asynccontextmanager
async def served(
    data_dir: Path,
    engines: list[Engine],
    *,
    key: bool = False,
    client: tuple[str, int] = ("127.0.0.1", 5000),
    **settings: Any,
) -> AsyncIterator[Served]:
    """The app on ``engines`` with its database in ``data_dir``, once its models are ready;
    with ``key``, a key exists and the client sends it as ``Authorization: Bearer``."""
    db = open_database(data_dir / "ocak.db")
    token = create_key(db, "k")[0] if key else ""
    headers = {"Authorization": f"Bearer {token}"} if key else {}
    app = create_app(Settings(data_dir=data_dir, **settings), EngineRegistry(engines), db=db)
    try:
        async with app.router.lifespan_context(app):
            while not app.state.ocak.engines.ready:
                await asyncio.sleep(0.01)
            transport = httpx.ASGITransport(app=app, client=client)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://127.0.0.1", headers=headers
            ) as c:
                yield Served(app, c, token)
    finally:
        db.close()


def run_app(
    data_dir: Path,
    check: Check,
    *,
    client: tuple[str, int] = ("127.0.0.1", 5000),
    **settings: Any,
) -> None:
    """Start the app on ``data_dir`` (and ``settings``), run ``check`` with a client calling
    from ``client``."""

    async def main() -> None:
        engine = FakeEngine("default", script=lambda r: PACKET, context_length=100_000)
        async with served(data_dir, [engine], client=client, **settings) as s:
            await check(s.client)

    asyncio.run(main())


async def play(c: httpx.AsyncClient, player: str, line: str, turns: int = 2) -> str:
    """A session of ``player`` with Bram and ``turns`` lines said in it; its id."""
    r = await c.post("/v1/sessions", json={"player_id": player, "characters": ["bram"]})
    assert r.status_code == 201, r.text
    sid = str(r.json()["id"])
    for _ in range(turns):
        r = await c.post(f"/v1/sessions/{sid}/messages", json={"text": line})
        assert r.status_code == 200, r.text
    return sid
