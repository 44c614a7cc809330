"""``ocak keys create --admin`` and ``ocak data show/rm`` as a user runs them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from keys_helpers import create_key as cli_create_key
from keys_helpers import ocak
from ocak.characters import store
from ocak.characters.players import player_data
from ocak.config import Settings
from ocak.engines.fake import FakeEngine
from ocak.engines.registry import EngineRegistry
from ocak.server.app import create_app
from ocak.store.db import open_database
from paths import EXAMPLES as PROJECT_EXAMPLES

EXAMPLES = PROJECT_EXAMPLES / "characters"


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


def run(tmp_path: Path, check: Check, *, client: tuple[str, int] = ("127.0.0.1", 5000)) -> None:
    async def main() -> None:
        engine = FakeEngine("default", script=lambda r: PACKET, context_length=100_000)
        db = open_database(tmp_path / "ocak.db")
        app = create_app(Settings(data_dir=tmp_path), EngineRegistry([engine]), db=db)
        async with app.router.lifespan_context(app):
            while not app.state.ocak.engines.ready:
                await asyncio.sleep(0.01)
            transport = httpx.ASGITransport(app=app, client=client)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
                await check(c)
        db.close()

    asyncio.run(main())


def test_ocak_keys_create_admin(tmp_path: Path) -> None:
    cli_create_key(tmp_path, "ops", "--admin")
    cli_create_key(tmp_path, "game")
    listed = ocak(tmp_path, "keys", "list").stdout
    rows = {line.split("│")[1].strip(): line for line in listed.splitlines() if "ocak-" in line}
    assert "admin" in rows["ops"] and "admin" not in rows["game"]


async def play(c: httpx.AsyncClient, player: str, line: str) -> str:
    r = await c.post("/v1/sessions", json={"player_id": player, "characters": ["bram"]})
    assert r.status_code == 201, r.text
    sid = str(r.json()["id"])
    for _ in range(2):
        r = await c.post(f"/v1/sessions/{sid}/messages", json={"text": line})
        assert r.status_code == 200, r.text
    return sid


def test_ocak_data_rm_says_what_it_removed(tmp_path: Path) -> None:
    async def setup(c: httpx.AsyncClient) -> None:
        await c.post("/v1/characters/import", content=(EXAMPLES / "bram.yaml").read_bytes())
        await play(c, "player-7", "hello")

    run(tmp_path, setup)
    shown = ocak(tmp_path, "data", "show", "--player", "player-7").stdout
    assert "1 sessions" in shown and "turns (the transcript)" in shown
    out = ocak(tmp_path, "data", "rm", "--player", "player-7")
    assert "Deleted player 'player-7': 1 sessions" in out.stderr
    db = store.open_characters_db(tmp_path)
    try:
        assert not any(player_data(db, "player-7").values())
    finally:
        db.close()
    nothing = ocak(tmp_path, "data", "rm", "--player", "player-7")
    assert "nothing (no data about this player)" in nothing.stderr
