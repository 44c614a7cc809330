"""The administrator scope, key management over HTTP, and deleting a player's data.

In-process on the scripted fake engine with real SQLite files (the keys store and
the characters store).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx

from app_helpers import play
from app_helpers import run_app as run
from ocak.characters import store
from ocak.store.db import open_database
from ocak.store.keys import create_key, stored_keys
from paths import EXAMPLES as PROJECT_EXAMPLES

EXAMPLES = PROJECT_EXAMPLES / "characters"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_without_keys_admin_routes_answer_loopback_clients_only(tmp_path: Path) -> None:
    async def local(c: httpx.AsyncClient) -> None:
        assert (await c.get("/v1/keys")).json() == {"object": "list", "data": []}

    async def remote(c: httpx.AsyncClient) -> None:
        r = await c.get("/v1/keys")
        assert r.status_code == 403 and r.json()["error"]["code"] == "admin_required"
        assert "loopback" in r.json()["error"]["message"]
        assert (await c.delete("/v1/players/p1")).status_code == 403
        chat = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}
        assert (await c.post("/v1/chat/completions", json=chat)).status_code == 200

    run(tmp_path, local)
    run(tmp_path, remote, client=("192.168.1.20", 5000))


def test_admin_routes_refuse_other_keys_and_existing_keys_keep_what_they_had(
    tmp_path: Path,
) -> None:
    other = open_database(tmp_path / "ocak.db")
    user, _ = create_key(other, "game", models=["default"])
    admin, _ = create_key(other, "operator", admin=True)
    other.close()

    async def check(c: httpx.AsyncClient) -> None:
        for method, path in (
            ("GET", "/v1/keys"),
            ("POST", "/v1/keys"),
            ("DELETE", "/v1/keys/game"),
            ("DELETE", "/v1/players/p1"),
        ):
            r = await c.request(method, path, headers=bearer(user), json={"name": "x"})
            assert r.status_code == 403, (method, path, r.text)
            assert r.json()["error"]["code"] == "admin_required"
            assert "--admin" in r.json()["error"]["message"]
            assert (await c.request(method, path)).status_code == 401  # no key at all
        chat = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}
        assert (await c.post("/v1/chat/completions", json=chat, headers=bearer(user))).is_success

        listed = (await c.get("/v1/keys", headers=bearer(admin))).json()["data"]
        assert {(k["name"], k["admin"]) for k in listed} == {("game", False), ("operator", True)}
        assert all("hash" not in k and "key" not in k for k in listed)
        made = await c.post("/v1/keys", json={"name": "bot", "rpm": 60}, headers=bearer(admin))
        assert made.status_code == 201 and made.json()["key"].startswith("ocak-")
        new = made.json()["key"]
        assert (await c.post("/v1/chat/completions", json=chat, headers=bearer(new))).is_success
        bad = await c.post("/v1/keys", json={"name": "bot", "rpm": -1}, headers=bearer(admin))
        assert bad.status_code == 400
        gone = await c.delete("/v1/keys/bot", headers=bearer(admin))
        assert gone.status_code == 200 and gone.json()["revoked_at"] is not None
        r = await c.post("/v1/chat/completions", json=chat, headers=bearer(new))
        assert r.status_code == 401

    run(tmp_path, check)


def test_a_version_2_store_gains_the_scope_and_its_keys_are_not_administrators(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ocak.db"
    old = open_database(path, migrate_to=2)
    old.execute(
        "INSERT INTO keys (name, prefix, hash, created_at) VALUES ('old', 'ocak-abc', ?, 0)",
        ("ab" * 32,),
    )
    old.close()
    db = open_database(path)
    (key,) = stored_keys(db)
    assert (
        key.info.name == "old" and key.info.admin is False and key.hash == bytes.fromhex("ab" * 32)
    )
    db.close()


def characters_rows(data_dir: Path, player: str, sessions: list[str]) -> dict[str, int]:
    """Rows that mention the player or their sessions, table by table, read directly."""
    conn = sqlite3.connect(data_dir / store.DB_NAME)
    marks = ",".join("?" * len(sessions)) or "''"
    try:
        return {
            "sessions": conn.execute(
                "SELECT count(*) FROM sessions WHERE player_id = ?", (player,)
            ).fetchone()[0],
            "members": conn.execute(
                f"SELECT count(*) FROM members WHERE session_id IN ({marks})", sessions
            ).fetchone()[0],
            "turns": conn.execute(
                f"SELECT count(*) FROM turns WHERE session_id IN ({marks})", sessions
            ).fetchone()[0],
            "witnesses": conn.execute(
                "SELECT count(*) FROM witnesses WHERE turn_id NOT IN (SELECT id FROM turns)"
            ).fetchone()[0],
            "summaries": conn.execute(
                f"SELECT count(*) FROM summaries WHERE session_id IN ({marks})", sessions
            ).fetchone()[0],
            "relationships": conn.execute(
                "SELECT count(*) FROM relationships WHERE player_id = ?", (player,)
            ).fetchone()[0],
            "memories": conn.execute(
                f"SELECT count(*) FROM memories WHERE player_id = ? OR session_id IN ({marks})",
                (player, *sessions),
            ).fetchone()[0],
        }
    finally:
        conn.close()


def test_a_players_data_is_deleted_from_every_table_and_no_one_elses(tmp_path: Path) -> None:
    sessions: dict[str, list[str]] = {"p1": [], "p2": []}

    async def setup(c: httpx.AsyncClient) -> None:
        r = await c.post("/v1/characters/import", content=(EXAMPLES / "bram.yaml").read_bytes())
        assert r.status_code == 201, r.text
        for player, line in (("p1", "my secret is zanzibar"), ("p2", "I like quartz")):
            sessions[player] = [await play(c, player, line), await play(c, player, line)]
        db = store.open_characters_db(tmp_path)
        row = store.get_session(db, sessions["p1"][0])
        assert row is not None
        store.add_summary(db, row, "bram", 2, "The player told Bram about zanzibar.")
        db.close()

    run(tmp_path, setup)
    before = characters_rows(tmp_path, "p1", sessions["p1"])
    assert all(before[t] for t in ("sessions", "members", "turns", "summaries", "memories"))
    assert before["relationships"] == 1
    p2_before = characters_rows(tmp_path, "p2", sessions["p2"])

    async def delete(c: httpx.AsyncClient) -> None:
        r = await c.delete("/v1/players/p1")
        assert r.status_code == 200, r.text
        removed = r.json()["removed"]
        assert r.json()["deleted"] is True
        for table in ("sessions", "members", "turns", "summaries", "relationships"):
            assert removed[table] == before[table], table
        assert removed["memories"] == before["memories"]
        for sid in sessions["p1"]:
            assert (await c.get(f"/v1/sessions/{sid}")).status_code == 404
        for sid in sessions["p2"]:
            assert (await c.get(f"/v1/sessions/{sid}")).status_code == 200
        again = await c.delete("/v1/players/p1")
        assert again.json()["deleted"] is False and not any(again.json()["removed"].values())

    run(tmp_path, delete)
    assert not any(characters_rows(tmp_path, "p1", sessions["p1"]).values())
    assert characters_rows(tmp_path, "p2", sessions["p2"]) == p2_before
    conn = sqlite3.connect(tmp_path / store.DB_NAME)
    try:
        found = conn.execute("SELECT count(*) FROM memories WHERE memories MATCH 'zanzibar'")
        assert found.fetchone()[0] == 0
        assert (
            conn.execute("SELECT count(*) FROM turns WHERE text LIKE '%zanzibar%'").fetchone()[0]
            == 0
        )
    finally:
        conn.close()
