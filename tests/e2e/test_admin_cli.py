"""``ocak keys create --admin`` and ``ocak data show/rm`` as a user runs them."""

from __future__ import annotations

from pathlib import Path

import httpx

from app_helpers import play
from app_helpers import run_app as run
from keys_helpers import create_key as cli_create_key
from keys_helpers import ocak
from ocak.characters import store
from ocak.characters.players import player_data
from paths import EXAMPLES as PROJECT_EXAMPLES

EXAMPLES = PROJECT_EXAMPLES / "characters"


def test_ocak_keys_create_admin(tmp_path: Path) -> None:
    cli_create_key(tmp_path, "ops", "--admin")
    cli_create_key(tmp_path, "game")
    listed = ocak(tmp_path, "keys", "list").stdout
    rows = {line.split("│")[1].strip(): line for line in listed.splitlines() if "ocak-" in line}
    assert "admin" in rows["ops"] and "admin" not in rows["game"]


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
