"""Characters end to end: a real ``ocak serve`` on the default model, real SQLite.

Packets come from constrained decoding on the tiny default model, so these
check the mechanics (valid packets, declared actions, no stage directions in
text, lore, turn-taking, memory, durability), not the wisdom of the answers.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from helpers import ServerProcess
from ocak.characters.api import TurnOut
from ocak.characters.tavern import png_with_card
from paths import EXAMPLES as PROJECT_EXAMPLES

pytestmark = pytest.mark.slow

EXAMPLES = PROJECT_EXAMPLES / "characters"
SERVER_ARGS = ["--parallel", "8", "--ctx-size", "2048"]
TIMEOUT = 600.0

GUARD: dict[str, Any] = {
    "id": "guard",
    "name": "Hale",
    "persona": "Captain Hale, the stern gate guard of Oakvale. Loyal, suspicious of strangers.",
    "speaking_style": "Curt, formal.",
    "emotions": ["neutral", "anger", "surprise", "interest", "fear"],
    "text_max_chars": 40,
    "actions": [
        {
            "name": "give_item",
            "description": "Hand the player something.",
            "parameters": {
                "type": "object",
                "properties": {"item": {"type": "string", "enum": ["pass", "torch", "bread"]}},
                "required": ["item"],
            },
        },
        {
            "name": "attack",
            "description": "Attack a threat.",
            "parameters": {
                "type": "object",
                "properties": {
                    "target": {"type": "string", "maxLength": 24},
                    "force": {"type": "integer", "minimum": 1, "maximum": 3},
                },
                "required": ["target", "force"],
            },
        },
        {"name": "open_gate", "description": "Let the player into the town."},
    ],
}
LINES = [
    "*waves* Hello there! Who are you?",
    "Can you give me some bread? I am starving.",
    "(draws a sword slowly) Step aside.",
    "Open the gate, please. I have a pass.",
    "[laughs] You look tired, captain.",
    "A wolf is behind me! Help!",
]


def post(http: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST and check the status the API declares: 200 for a turn, 201 for what it creates."""
    r = http.post(path, json=body)
    assert r.status_code == (200 if path.endswith("/messages") else 201), r.text
    data: dict[str, Any] = r.json()
    return data


def stream_turn(
    http: httpx.Client, sid: str, body: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    frames = []
    with http.stream("POST", f"/v1/sessions/{sid}/messages", json={**body, "stream": True}) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("data: "):
                frames.append(json.loads(line[6:]))
    assert frames[-1]["type"] == "done", frames[-1]
    return frames[-1]["turn"], frames


def check_packet(turn: dict[str, Any], card: dict[str, Any]) -> None:
    """Everything a game relies on in a packet."""
    TurnOut.model_validate(turn)
    assert turn["character"] == card["id"]
    assert turn["emotion"]["label"] in card["emotions"]
    assert 0.0 <= turn["emotion"]["strength"] <= 1.0
    declared = {a["name"]: a.get("parameters", {"type": "object"}) for a in card["actions"]}
    for action in turn["actions"]:
        assert action["name"] in declared
        jsonschema.validate(action["parameters"], declared[action["name"]])
    assert len(turn["text"]) <= card["text_max_chars"]
    assert not any(c in turn["text"] for c in "*()[]"), turn["text"]
    for dim in ("trust", "respect", "familiarity"):
        assert -5 <= turn["relationship"][dim]["change"] <= 5


@pytest.fixture(scope="module")
def npc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    data = tmp_path_factory.mktemp("characters")
    proc = ServerProcess(SERVER_ARGS, env={"OCAK_DATA_DIR": str(data)})
    try:
        proc.wait_ready()
        with httpx.Client(base_url=proc.url, timeout=TIMEOUT) as http:
            post(http, "/v1/characters", GUARD)
            card = json.loads((EXAMPLES / "seraphina.json").read_text())
            r = http.post("/v1/characters/import?id=sera", content=png_with_card(card))
            assert r.status_code == 201, r.text
            yield http
    finally:
        proc.stop()


def test_thirty_sampled_turns_all_yield_valid_packets(npc: httpx.Client) -> None:
    """30 turns at temperature 1 (6 sessions of 5, concurrently; half streamed)."""

    def session(i: int) -> list[dict[str, Any]]:
        sid = post(npc, "/v1/sessions", {"player_id": f"p{i}", "characters": ["guard"]})["id"]
        turns = []
        for j in range(5):
            body = {"text": LINES[(i + j) % len(LINES)], "temperature": 1.0, "seed": 100 * i + j}
            if (i + j) % 2:
                turn, frames = stream_turn(npc, sid, body)
                kinds = [f["type"] for f in frames]
                assert kinds[0] == "speaker"
                last_text = max((k for k, f in enumerate(kinds) if f == "text"), default=-1)
                assert last_text < kinds.index("emotion") < kinds.index("done")
                resets = [k for k, f in enumerate(kinds) if f == "reset"]
                start = resets[-1] if resets else 0
                text = "".join(f["delta"] for f in frames[start:] if f["type"] == "text")
                assert text == turn["text"]
            else:
                turn = post(npc, f"/v1/sessions/{sid}/messages", body)
            turns.append(turn)
        return turns

    with ThreadPoolExecutor(6) as pool:
        turns = [t for ts in pool.map(session, range(6)) for t in ts]
    assert len(turns) == 30
    for turn in turns:
        check_packet(turn, GUARD)


def test_png_card_with_lorebook_activates_entries_by_key(npc: httpx.Client) -> None:
    card = npc.get("/v1/characters/sera").json()
    assert card["name"] == "Seraphina"
    assert [e["name"] for e in card["lorebook"]["entries"]] == [
        "Shadow wolves",
        "Blackmire",
        "Moonpetal",
    ]
    sid = post(npc, "/v1/sessions", {"player_id": "lore", "characters": ["sera"]})["id"]
    turn = post(npc, f"/v1/sessions/{sid}/messages", {"text": "The shadow wolves chased me!"})
    assert turn["lore"] == ["Shadow wolves"]
    assert not any(c in turn["text"] for c in "*()[]")
    sid = post(npc, "/v1/sessions", {"player_id": "lore", "characters": ["sera"], "greet": False})[
        "id"
    ]
    turn = post(npc, f"/v1/sessions/{sid}/messages", {"text": "Good morning. Lovely day."})
    assert turn["lore"] == []


def test_group_turn_taking(npc: httpx.Client) -> None:
    sid = post(
        npc,
        "/v1/sessions",
        {"player_id": "grp", "characters": ["guard", "sera"], "greet": False},
    )["id"]

    def say(body: dict[str, Any]) -> str:
        turn = post(npc, f"/v1/sessions/{sid}/messages", body)
        speaker: str = turn["character"]
        return speaker

    assert say({"text": "Seraphina, can you heal me?"}) == "sera"  # addressed by name
    assert say({"text": "Thank you. Hale, is the gate open?"}) == "guard"  # the first name wins
    assert say({"text": "What do you both think?"}) == "sera"  # waited longest
    assert say({"text": "Anyone?", "character": "guard"}) == "guard"  # asked for explicitly
    session = npc.get(f"/v1/sessions/{sid}").json()
    speakers = [t["speaker"] for t in session["turns"] if t["kind"] == "character"]
    assert speakers == ["sera", "guard", "sera", "guard"]


def test_memory_survives_restart_and_kill_9_loses_no_acknowledged_turn(tmp_path: Path) -> None:
    env = {"OCAK_DATA_DIR": str(tmp_path)}
    proc = ServerProcess(SERVER_ARGS, env=env)
    acked: list[tuple[str, int, str]] = []
    try:
        proc.wait_ready()
        with httpx.Client(base_url=proc.url, timeout=TIMEOUT) as http:
            post(http, "/v1/characters", GUARD)
            post(http, "/v1/characters", {**GUARD, "id": "clerk", "name": "Mabel"})
            sid = post(http, "/v1/sessions", {"player_id": "ada", "characters": ["guard"]})["id"]
            fact = "I hid the ruby amulet under the old oak tree."
            turn = post(http, f"/v1/sessions/{sid}/messages", {"text": fact})
            acked.append((sid, turn["seq"], turn["text"]))
            sessions = [
                post(http, "/v1/sessions", {"player_id": f"k{i}", "characters": ["guard"]})["id"]
                for i in range(4)
            ]
            stop = threading.Event()
            killed = threading.Event()
            lock = threading.Lock()
            problems: list[str] = []

            def talk(k: int) -> None:
                s = sessions[k]
                n = 0
                while not stop.is_set():
                    body = {"text": LINES[n % len(LINES)], "seed": n}
                    try:
                        if (k + n) % 2:
                            turn, _ = stream_turn(http, s, body)
                        else:
                            turn = post(http, f"/v1/sessions/{s}/messages", body)
                    except (
                        httpx.HTTPError,
                        AssertionError,
                        IndexError,
                        json.JSONDecodeError,
                    ) as exc:
                        if not killed.is_set():  # before the kill, any of these is a failure
                            with lock:
                                problems.append(f"session {s} turn {n}: {exc!r}")
                        return  # after it: the server died under us, nothing acknowledged
                    with lock:
                        acked.append((s, turn["seq"], turn["text"]))
                    n += 1

            threads = [threading.Thread(target=talk, args=(k,)) for k in range(4)]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 300
            while len(acked) < 6 and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(1.0)  # turns are in flight now
            killed.set()
            proc.proc.send_signal(signal.SIGKILL)
            proc.proc.wait()
            stop.set()
            for t in threads:
                t.join(timeout=60)
        assert len(acked) >= 6
        assert problems == []
    finally:
        proc.stop()

    proc = ServerProcess(SERVER_ARGS, env=env)
    try:
        proc.wait_ready()
        with httpx.Client(base_url=proc.url, timeout=TIMEOUT) as http:
            for s, seq, text in acked:
                turns = {t["seq"]: t for t in http.get(f"/v1/sessions/{s}").json()["turns"]}
                assert seq in turns and turns[seq]["text"] == text and turns[seq]["speaker"]
            for s in {s for s, _, _ in acked}:
                kinds = [t["kind"] for t in http.get(f"/v1/sessions/{s}").json()["turns"]]
                # Exchanges are atomic: every player line is followed by its answer.
                for k, kind in enumerate(kinds):
                    if kind == "player":
                        assert kinds[k + 1] == "character"
            question = {"text": "Do you remember where the ruby amulet is?"}
            sid = post(http, "/v1/sessions", {"player_id": "ada", "characters": ["guard"]})["id"]
            turn = post(http, f"/v1/sessions/{sid}/messages", question)
            assert any("ruby amulet under the old oak" in m for m in turn["memories"])
            # Mabel never heard it: a character only remembers what it witnessed.
            sid = post(http, "/v1/sessions", {"player_id": "ada", "characters": ["clerk"]})["id"]
            turn = post(http, f"/v1/sessions/{sid}/messages", question)
            assert not any("ruby" in m for m in turn["memories"])
    finally:
        proc.stop()
