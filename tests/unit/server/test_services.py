"""``build_services``: one place builds the server's parts; ``close()`` closes what it opened
and leaves both databases checkpointed (no WAL left beside the files)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from ocak.characters import store as characters_store
from ocak.characters.cards import card_from_data
from ocak.config import ConfigError, Settings
from ocak.engines.fake import FakeEngine
from ocak.engines.registry import EngineRegistry
from ocak.server.services import build_services
from ocak.store.db import database_path, open_database


def test_services_close_checkpoints_and_closes_both_databases(tmp_path: Path) -> None:
    services = build_services(Settings(data_dir=tmp_path), EngineRegistry([FakeEngine("default")]))
    assert services.db is not None and services.serving.router is services.gateway.router
    characters = services.characters  # opened on first use
    assert characters is services.characters  # once
    characters_store.put_character(
        characters.db,
        card_from_data({"name": "Mira", "persona": "a guard"}),
    )
    services.db.execute("SELECT count(*) FROM usage")
    asyncio.run(services.close())
    asyncio.run(services.close())  # a second close does nothing
    for db in (services.db, characters.db):
        with pytest.raises(sqlite3.ProgrammingError):
            db.execute("SELECT 1")
    for path in (database_path(tmp_path), characters_store.characters_db_path(tmp_path)):
        wal = path.with_name(path.name + "-wal")
        assert not wal.exists() or wal.stat().st_size == 0, wal
    # What was written is in the files themselves.
    reopened = characters_store.open_characters_db(tmp_path)
    assert [c.name for c in characters_store.list_characters(reopened)] == ["Mira"]
    reopened.close()


def test_a_database_the_caller_gave_stays_open(tmp_path: Path) -> None:
    db = open_database(database_path(tmp_path))
    services = build_services(
        Settings(data_dir=tmp_path), EngineRegistry([FakeEngine("default")]), db=db
    )
    asyncio.run(services.close())
    assert db.execute("SELECT 1") == [(1,)]
    db.close()


def test_a_bad_alias_is_an_error_at_start_and_opens_nothing(tmp_path: Path) -> None:
    config = tmp_path / "ocak.yaml"
    config.write_text("models:\n  assistant:\n    targets:\n      - {local: nope}\n")
    settings = Settings.load(config, data_dir=tmp_path)
    with pytest.raises(ConfigError, match="no local model 'nope'"):
        build_services(settings, EngineRegistry([FakeEngine("default")]))
    assert not characters_store.characters_db_path(tmp_path).exists()
