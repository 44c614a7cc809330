"""Players' recordings: nothing written unless the operator keeps them; gone with their
session or their player."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ocak.characters import store
from ocak.characters.cards import Character
from ocak.characters.players import delete_player
from ocak.characters.recordings import Recordings
from ocak.characters.service import CharacterService
from ocak.characters.serving import local_resolver
from ocak.engines.registry import EngineRegistry
from ocak.store.db import Store

CARD = {"id": "bram", "name": "Bram", "persona": "A smith."}


def test_off_nothing_is_written(tmp_path: Path) -> None:
    off = Recordings.in_data_dir(tmp_path, keep=False)
    assert off.keep("sess_a", b"RIFF....") is None
    assert list(tmp_path.iterdir()) == []


def test_kept_recordings_go_with_their_session_and_their_player(
    tmp_path: Path, characters_db: Callable[[], Store]
) -> None:
    db = characters_db()
    kept = Recordings.in_data_dir(tmp_path, keep=True)
    service = CharacterService(db, local_resolver(EngineRegistry([])), recordings=kept)
    store.put_character(db, Character.model_validate(CARD))
    first = service.create_session("p1", ["bram"], greet=False).id
    second = service.create_session("p1", ["bram"], greet=False).id
    other = service.create_session("p2", ["bram"], greet=False).id
    paths = {s: kept.keep(s, b"RIFF" + s.encode()) for s in (first, second, other)}
    assert all(p is not None and p.read_bytes().startswith(b"RIFF") for p in paths.values())
    service.delete_session(first)
    assert not (tmp_path / "recordings" / first).exists()
    assert (tmp_path / "recordings" / second).exists()
    delete_player(db, "p1", kept)
    assert not (tmp_path / "recordings" / second).exists()
    assert (tmp_path / "recordings" / other).exists()  # another player's stay
