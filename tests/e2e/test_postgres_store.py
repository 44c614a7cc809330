"""Two ``ocak serve`` processes on one real PostgreSQL (``database_url``): a key made on
one works on the other at once, a key revoked on one is refused by the other at once,
a key's requests per minute are counted across both, a prompt labelled on one is the
other's, a character session played on one continues on the other, and both processes'
usage records are one history; the CLI uses the same store; an
unreachable database is one clear line with no password in it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from helpers import running
from keys_helpers import ocak
from pg import PgServer

pytestmark = pytest.mark.slow

CHAT = {"model": "default", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]}


def cli(url: str, data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return ocak(data, *args, check=False, env={"OCAK_DATABASE_URL": url})


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_two_servers_share_keys_and_usage(pg_server: PgServer, tmp_path: Path) -> None:
    url = pg_server.database()
    made = cli(url, tmp_path / "cli", "keys", "create", "--name", "owner", "--admin")
    assert made.returncode == 0, made.stderr
    admin = made.stdout.strip()
    env_a = {"OCAK_DATABASE_URL": url, "OCAK_DATA_DIR": str(tmp_path / "a")}
    env_b = {"OCAK_DATABASE_URL": url, "OCAK_DATA_DIR": str(tmp_path / "b")}
    with running(env=env_a) as a, running(env=env_b) as b:
        r = httpx.post(f"{a.url}/v1/keys", json={"name": "game"}, headers=bearer(admin))
        assert r.status_code == 201, r.text
        game = r.json()["key"]
        chat = httpx.post(f"{b.url}/v1/chat/completions", json=CHAT, headers=bearer(game),
                          timeout=60)  # fmt: skip
        assert chat.status_code == 200, chat.text  # made on A, accepted by B at once

        assert httpx.delete(f"{a.url}/v1/keys/game", headers=bearer(admin)).status_code == 200
        refused = httpx.post(f"{b.url}/v1/chat/completions", json=CHAT, headers=bearer(game),
                             timeout=60)  # fmt: skip
        assert refused.status_code == 401, refused.text  # revoked on A, refused by B at once

        chat = httpx.post(f"{a.url}/v1/chat/completions", json=CHAT, headers=bearer(admin),
                          timeout=60)  # fmt: skip
        assert chat.status_code == 200, chat.text
        # A key's requests per minute hold across both processes, not per process.
        r = httpx.post(f"{a.url}/v1/keys", json={"name": "npc", "rpm": 3}, headers=bearer(admin))
        npc = r.json()["key"]
        codes = [
            httpx.post(f"{server.url}/v1/chat/completions", json=CHAT, headers=bearer(npc),
                       timeout=60).status_code
            for server in (a, b, a, b)
        ]  # fmt: skip
        assert codes == [200, 200, 200, 429], codes
        # A prompt version made and labelled on A is what a request on B renders.
        prompt = {"id": "greet", "messages": [{"role": "system", "content": "Be brief."}],
                  "labels": ["production"]}  # fmt: skip
        made = httpx.post(f"{a.url}/v1/prompts", json=prompt, headers=bearer(admin))
        assert made.status_code == 201, made.text
        listed = httpx.get(f"{b.url}/v1/prompts", headers=bearer(admin)).json()["data"]
        assert [(p["id"], p["labels"]) for p in listed] == [("greet", {"production": 1})]
        report = httpx.get(f"{b.url}/v1/usage", params={"by": "key"}, headers=bearer(admin))
        groups = {s["group"]: s["requests"] for s in report.json()["summary"]}
        assert groups.get("game") == 1 and groups.get("owner") == 1, groups  # one on each
        continue_a_character_session(a.url, b.url, bearer(admin))
    listed = cli(url, tmp_path / "cli", "usage", "--by", "key")
    assert listed.returncode == 0 and "game" in listed.stdout, listed.stdout + listed.stderr
    # Nothing was written beside either server: the stores are PostgreSQL.
    for name in ("ocak.db", "characters.db"):
        assert not (tmp_path / "a" / name).exists() and not (tmp_path / "b" / name).exists()


def continue_a_character_session(a: str, b: str, headers: dict[str, str]) -> None:
    """A card added and a session played on A continue on B: B answers the next turn,
    both show one transcript, and a new session on B recalls what the player said on A."""
    card = {"id": "smith", "name": "Bram", "persona": "The village smith.", "text_max_chars": 60}
    with httpx.Client(headers=headers, timeout=120) as http:
        assert http.post(f"{a}/v1/characters", json=card).status_code == 201
        made = http.post(f"{a}/v1/sessions", json={"player_id": "p1", "characters": ["smith"],
                                                   "greet": False})  # fmt: skip
        assert made.status_code == 201, made.text
        sid = made.json()["id"]
        line = {"text": "My horse is called Thunderbolt.", "seed": 1}
        assert http.post(f"{a}/v1/sessions/{sid}/messages", json=line).status_code == 200
        turn = http.post(f"{b}/v1/sessions/{sid}/messages", json={"text": "Is he shod?", "seed": 2})
        assert turn.status_code == 200, turn.text
        assert turn.json()["character"] == "smith"
        on_a = http.get(f"{a}/v1/sessions/{sid}").json()["turns"]
        assert http.get(f"{b}/v1/sessions/{sid}").json()["turns"] == on_a
        assert [(t["seq"], t["kind"]) for t in on_a] == [
            (1, "player"), (2, "character"), (3, "player"), (4, "character")
        ]  # fmt: skip
        assert on_a[0]["text"] == "My horse is called Thunderbolt."
        later = http.post(f"{b}/v1/sessions", json={"player_id": "p1", "characters": ["smith"],
                                                    "greet": False}).json()["id"]  # fmt: skip
        recalled = http.post(f"{b}/v1/sessions/{later}/messages",
                             json={"text": "Do you remember Thunderbolt?", "seed": 3})  # fmt: skip
        assert recalled.status_code == 200, recalled.text
        assert any("Thunderbolt" in m for m in recalled.json()["memories"]), recalled.json()


def test_an_unreachable_database_is_one_line_without_the_password(tmp_path: Path) -> None:
    from helpers import free_port

    url = f"postgresql://ocak:s3cret-pw@127.0.0.1:{free_port()}/ocak"
    result = cli(url, tmp_path, "keys", "list")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cannot connect to PostgreSQL" in result.stderr
    assert "s3cret-pw" not in result.stderr + result.stdout and "ocak:***@" in result.stderr
    assert "Traceback" not in result.stderr
