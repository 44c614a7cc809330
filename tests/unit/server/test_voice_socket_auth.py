"""The voice WebSocket obeys the same keys as HTTP: refused before it is accepted without
one (browsers' cross-site sockets are the web guard's, tested beside it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from ocak.config import Settings
from ocak.engines.fake import FakeEngine
from ocak.engines.registry import EngineRegistry
from ocak.server.app import create_app
from ocak.store.db import open_database
from ocak.store.keys import create_key, revoke_key

VOICE = "ws://127.0.0.1/v1/sessions/sess_nope/voice"


def test_a_voice_socket_needs_a_valid_key(tmp_path: Path) -> None:
    db = open_database(tmp_path / "ocak.db")
    key, _ = create_key(db, "game")
    old, _ = create_key(db, "old")
    revoke_key(db, "old")
    app = create_app(Settings(data_dir=tmp_path), EngineRegistry([FakeEngine("fake")]), db=db)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        for headers in (
            {},
            {"Authorization": "Bearer ocak-wrong"},
            {"Authorization": f"Bearer {old}"},
        ):
            with (
                pytest.raises(WebSocketDisconnect) as refused,
                client.websocket_connect(VOICE, headers=headers),
            ):
                pass
            assert refused.value.code == 1008 and "key" in refused.value.reason.lower()
        with client.websocket_connect(VOICE, headers={"Authorization": f"Bearer {key}"}) as ws:
            reply = ws.receive_json()  # in: the session is what is missing
            assert reply["type"] == "error" and reply["error"]["param"] == "session_id"
    db.close()
