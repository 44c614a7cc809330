"""The character service on a real store (SQLite, and PostgreSQL: the ``characters_db``
fixture) with the scripted FakeEngine (no model).

The fake stands in for the model's output only; the store, prompts, validation,
retries, memory and the HTTP app are the real ones.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from ocak.characters import store
from ocak.characters.api import TurnOut
from ocak.characters.cards import load_card
from ocak.characters.events import (
    Reset,
    Speaking,
    TextPiece,
    TurnDone,
    TurnEvent,
    TurnInput,
)
from ocak.characters.packet import NoValidPacket
from ocak.characters.service import CharacterService
from ocak.characters.serving import local_resolver
from ocak.config import CharacterSettings, Settings
from ocak.engines.chat_template import ChatTemplate
from ocak.engines.fake import FakeEngine
from ocak.engines.registry import EngineRegistry
from ocak.errors import InvalidRequest
from ocak.protocol.generation import GenerationRequest
from ocak.server.app import create_app
from ocak.store.db import Store
from paths import EXAMPLES as PROJECT_EXAMPLES

EXAMPLES = PROJECT_EXAMPLES / "characters"
Opener = Callable[[], Store]  # the characters_db fixture: a new connection to one store


def wire(text: str = "Aye.", **over: Any) -> str:
    base: dict[str, Any] = {
        "text": text,
        "narration": "",
        "emotion": {"label": "neutral", "strength": 2},
        "actions": [],
        "relationship": {"trust": 1, "respect": 0, "familiarity": 1},
    }
    base.update(over)
    return json.dumps(base, separators=(", ", ": "))


class Scripted:
    """Answers packets from a list (the last repeats); records every request."""

    def __init__(self, *outputs: str, summary: str = "They met at the forge.") -> None:
        self.outputs = list(outputs)
        self.summary = summary
        self.requests: list[GenerationRequest] = []

    def __call__(self, request: GenerationRequest) -> str:
        self.requests.append(request)
        if request.constraint is None:  # the summarizer
            return self.summary
        return self.outputs.pop(0) if len(self.outputs) > 1 else self.outputs[0]


def make_service(
    open_db: Opener, script: Callable[[GenerationRequest], str], **settings: Any
) -> CharacterService:
    engine = FakeEngine("default", script=script, context_length=100_000)
    asyncio.run(engine.load())
    db = open_db()
    service = CharacterService(
        db, local_resolver(EngineRegistry([engine])), CharacterSettings(**settings)
    )
    store.put_character(db, load_card(EXAMPLES / "bram.yaml"))
    store.put_character(db, load_card(EXAMPLES / "seraphina.json"))
    return service


def run_turn(service: CharacterService, session: str, **inp: Any) -> list[TurnEvent]:
    async def go() -> list[TurnEvent]:
        return [e async for e in service.turn(session, TurnInput(**inp))]

    return asyncio.run(go())


def done(events: list[TurnEvent]) -> TurnOut:
    last = events[-1]
    assert isinstance(last, TurnDone) and isinstance(last.turn, TurnOut)
    return last.turn


def test_turn_streams_text_then_commits(characters_db: Opener) -> None:
    script = Scripted(
        wire(
            "*grunts* Take it. *hands you a dagger*",
            actions=[{"name": "give_item", "parameters": {"item": "dagger"}}],
        )
    )
    service = make_service(characters_db, script)
    sid = service.create_session("p1", ["bram"], player_name="Ada").id
    events = run_turn(service, sid, text="Can I have a dagger?")
    assert isinstance(events[0], Speaking)
    text = "".join(e.text for e in events if isinstance(e, TextPiece))
    turn = done(events)
    assert text == turn.text == "Take it."
    assert turn.narration == "grunts; hands you a dagger"
    assert [a.model_dump() for a in turn.actions] == [
        {"name": "give_item", "parameters": {"item": "dagger"}}
    ]
    assert turn.relationship.trust.value == 1 and turn.relationship.trust.change == 1
    # Committed: the greeting, the player's line, the packet; relationship stored.
    view = service.session(sid)
    assert [t.kind for t in view.turns] == ["character", "player", "character"]
    assert view.turns[-1].text == "Take it."
    assert view.relationships["bram"].trust.value == 1
    # The prompt carried the persona first and the relationship last.
    request = script.requests[-1]
    assert request.messages is not None and request.constraint is not None
    assert request.messages[0].content.startswith("You are Bram")
    assert "feelings toward Ada: trust 0" in request.messages[-1].content
    assert request.max_tokens and request.max_tokens >= len(wire("x" * 160))


def test_invalid_packet_is_retried_once_then_an_error(characters_db: Opener) -> None:
    bad = wire(actions=[{"name": "give_item", "parameters": {"item": "castle"}}])
    script = Scripted(bad, wire("Fine."))
    service = make_service(characters_db, script)
    sid = service.create_session("p1", ["bram"], greet=False).id
    events = run_turn(service, sid, text="hi", seed=5)
    assert any(isinstance(e, Reset) for e in events)  # the client discards the first text
    after_reset = events[[isinstance(e, Reset) for e in events].index(True) :]
    assert "".join(e.text for e in after_reset if isinstance(e, TextPiece)) == "Fine."
    turn = done(events)
    assert turn.usage.attempts == 2 and turn.text == "Fine."
    assert [r.seed for r in script.requests] == [5, 6]

    service2 = make_service(characters_db, Scripted("not json at all"))
    sid2 = service2.create_session("p1", ["bram"], greet=False).id
    with pytest.raises(NoValidPacket, match="no valid packet for Bram after 2 attempts"):
        run_turn(service2, sid2, text="hi")
    assert service2.session(sid2).turns == []  # a failed turn stores nothing


def test_length_finish_is_an_error_not_a_packet(characters_db: Opener) -> None:
    # The fake stops at max_tokens (words); a packet longer than that ends with "length".
    long = wire(" ".join(["word"] * 2000))
    service = make_service(characters_db, Scripted(long))
    sid = service.create_session("p1", ["bram"], greet=False).id
    with pytest.raises(NoValidPacket, match="did not complete"):
        run_turn(service, sid, text="hi")


def test_events_and_silent_records_and_witnesses(characters_db: Opener) -> None:
    script = Scripted(wire("Who goes there?"))
    service = make_service(characters_db, script)
    sid = service.create_session("p1", ["bram"], greet=False).id
    recorded = run_turn(service, sid, event="the sun sets", respond=False)
    assert isinstance(recorded[-1], TurnDone) and not isinstance(recorded[-1].turn, TurnOut)
    run_turn(service, sid, event="the player drew a sword")
    assert "[Event: the player drew a sword]" in script.requests[-1].messages[-1].content  # type: ignore[index]
    asyncio.run(service.membership(sid, "seraphina", join=True))
    run_turn(service, sid, text="Seraphina, did you see the sunset?")
    seen = script.requests[-1].messages
    assert seen is not None and seen[0].content.startswith("You are Seraphina")
    prompt = "\n".join(m.content for m in seen)
    assert "sun sets" not in prompt  # she joined after it: not witnessed
    assert "Seraphina joins" in prompt, prompt
    asyncio.run(service.membership(sid, "bram", join=False))
    assert service.session(sid).characters == ["seraphina"]
    turns = store.witnessed(service.db, sid, "bram")
    assert turns[-1].kind == "leave"


def test_memory_is_recalled_in_a_new_session_only_by_witnesses(characters_db: Opener) -> None:
    script = Scripted(wire("Noted."))
    service = make_service(characters_db, script)
    s1 = service.create_session("p1", ["bram"], greet=False).id
    run_turn(service, s1, text="My lucky charm is a silver owl named Pim.")
    # Reopen the store: what was committed is there.
    db2 = characters_db()  # reopened, or another process
    service = CharacterService(db2, service.resolve, service.settings)
    s2 = service.create_session("p1", ["bram", "seraphina"], greet=False).id
    turn = done(run_turn(service, s2, text="Bram, do you remember my silver owl?"))
    assert any("silver owl named Pim" in m for m in turn.memories)
    turn = done(run_turn(service, s2, text="Seraphina, do you remember my silver owl?"))
    assert turn.character == "seraphina"
    assert not any("Pim" in m for m in turn.memories)  # she never heard it
    # Another player's memories stay theirs.
    s3 = service.create_session("p2", ["bram"], greet=False).id
    assert done(run_turn(service, s3, text="Do you know a silver owl?")).memories == []


def test_a_session_continues_on_another_process(characters_db: Opener) -> None:
    """Two services on two connections to one store (on PostgreSQL: two ocak processes):
    what one committed is the other's history, and the turns are numbered as one."""
    first_script, second_script = (
        Scripted(wire("Aye, a grey mare.")),
        Scripted(wire("Welcome back.")),
    )
    first = make_service(characters_db, first_script)
    second = make_service(characters_db, second_script)
    sid = first.create_session("p1", ["bram"], player_name="Ada", greet=False).id
    run_turn(first, sid, text="My mare is called Thistle.")
    turn = done(run_turn(second, sid, text="Is Thistle shod yet?"))
    assert turn.text == "Welcome back."
    prompt = "\n".join(m.content for m in second_script.requests[-1].messages or [])
    assert "My mare is called Thistle." in prompt and "Aye, a grey mare." in prompt
    turns = first.session(sid).turns  # the first process sees the second's turn
    assert [(t.seq, t.kind) for t in turns] == [
        (1, "player"),
        (2, "character"),
        (3, "player"),
        (4, "character"),
    ]
    assert turns[-1].text == "Welcome back."


# A stand-in for an embedder: words of one meaning share a dimension.
CONCEPTS = {"ring": 0, "jewellery": 0, "necklace": 0, "weather": 1, "rain": 1, "bread": 2}


async def concept_vectors(texts: list[str]) -> np.ndarray:
    out = np.zeros((len(texts), 4), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in text.lower().replace("?", " ").replace(".", " ").split():
            out[i, CONCEPTS.get(word, 3)] += 1.0
    return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.mark.parametrize("embed", [None, concept_vectors])
def test_memories_are_recalled_by_meaning_when_there_is_an_embedder(
    characters_db: Opener, embed: Any
) -> None:
    service = make_service(characters_db, Scripted(wire("Noted.")))
    service.embed = embed
    s1 = service.create_session("p1", ["bram"], greet=False).id
    for line in ("The weather is grey.", "I lost my silver ring.", "Your bread is good."):
        run_turn(service, s1, text=line)
    s2 = service.create_session("p1", ["bram"], greet=False).id
    memories = done(run_turn(service, s2, text="Has anyone handed in my jewellery?")).memories
    if embed is None:  # no word in common: full-text search alone finds nothing
        assert memories == []
    else:
        assert "silver ring" in memories[0], memories


def test_older_turns_are_summarized_past_the_budget(characters_db: Opener) -> None:
    script = Scripted(wire("Aye, " + "very " * 20 + "true."), summary="Ada asked about swords.")
    service = make_service(characters_db, script, history_budget=60)
    sid = service.create_session("p1", ["bram"], player_name="Ada", greet=False).id
    for i in range(4):
        run_turn(service, sid, text=f"Tell me about sword number {i}.")
    summary = store.latest_summary(service.db, sid, "bram")
    assert summary is not None and summary[1] == "Ada asked about swords."
    summarize_requests = [r for r in script.requests if r.constraint is None]
    assert summarize_requests
    # (folds run once an answer is out, between turns: the last request may be one)
    last = [r for r in script.requests if r.constraint is not None][-1]
    assert last.messages is not None
    assert (
        "Earlier in this conversation (summary): Ada asked about swords."
        in last.messages[0].content
    )
    history = "\n".join(m.content for m in last.messages[1:])
    history = history[: history.rindex("\n(")]  # the turn's note (recalled memories) aside
    assert "sword number 0" not in history  # folded away
    assert "sword number 3" in history
    assert service.session(sid).summaries["bram"] == "Ada asked about swords."


def test_prompt_prefix_is_stable_from_turn_to_turn(characters_db: Opener) -> None:
    script = Scripted(wire("Aye."))
    service = make_service(characters_db, script)
    sid = service.create_session("p1", ["bram"], player_name="Ada").id
    template = ChatTemplate(None)
    rendered = []
    for text in ("Hello.", "I need a sword for the mill fire.", "Thanks."):
        run_turn(service, sid, text=text)
        messages = script.requests[-1].messages
        assert messages is not None
        rendered.append(template.render(messages))
    for before, after in itertools.pairwise(rendered):
        # Everything up to the turn's changing note at the end is reused by the next turn.
        stable = before[: before.rindex("\n(")]
        assert after.startswith(stable)
        assert len(stable) > len(before) // 2


def test_lore_goes_into_the_prompt_when_its_key_appears(characters_db: Opener) -> None:
    script = Scripted(wire("The wolves fear my glade."))
    service = make_service(characters_db, script)
    sid = service.create_session("p1", ["seraphina"], greet=False).id
    turn = done(run_turn(service, sid, text="The wolves attacked me!"))
    assert turn.lore == ["Shadow wolves"]
    assert "corrupted beasts" in script.requests[-1].messages[-1].content  # type: ignore[index]
    sid2 = service.create_session("p1", ["seraphina"], greet=False).id
    assert done(run_turn(service, sid2, text="Good morning.")).lore == []


# -- through the HTTP app -----------------------------------------------------------------


def test_http_api_and_openapi(tmp_path: Path) -> None:
    script = Scripted(wire("*nods* Welcome."))

    async def go() -> None:
        engine = FakeEngine("default", script=script, context_length=100_000)
        await engine.load()
        app = create_app(Settings(data_dir=tmp_path), EngineRegistry([engine]))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            spec = (await c.get("/openapi.json")).json()
            for path in (
                "/v1/characters",
                "/v1/characters/{character_id}",
                "/v1/sessions",
                "/v1/sessions/{session_id}",
                "/v1/sessions/{session_id}/messages",
            ):
                assert path in spec["paths"], path
            assert "TurnOut" in spec["components"]["schemas"]
            card = json.loads((EXAMPLES / "seraphina.json").read_text())
            r = await c.post("/v1/characters", json=card)
            assert r.status_code == 201 and r.json()["id"] == "seraphina"
            r = await c.post(
                "/v1/characters/import?id=bram2", content=(EXAMPLES / "bram.yaml").read_bytes()
            )
            assert r.status_code == 201 and r.json()["name"] == "Bram"
            ids = [c["id"] for c in (await c.get("/v1/characters")).json()["data"]]
            assert ids == ["bram2", "seraphina"]
            r = await c.post("/v1/sessions", json={"player_id": "p", "characters": ["nobody"]})
            assert r.status_code == 404
            r = await c.post("/v1/sessions", json={"player_id": "p", "characters": ["seraphina"]})
            sid = r.json()["id"]
            assert r.json()["turns"][0]["narration"].startswith("Seraphina kneels")
            r = await c.post(
                f"/v1/sessions/{sid}/messages", json={"text": "hi", "character": "bram2"}
            )
            assert r.status_code == 400 and r.json()["error"]["param"] == "character"
            r = await c.post("/v1/sessions/nope/messages", json={"text": "hi"})
            assert r.status_code == 404
            r = await c.post(f"/v1/sessions/{sid}/messages", json={"text": "hi"})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["text"] == "Welcome." and body["narration"] == "nods"
            frames: list[dict[str, Any]] = []
            async with c.stream(
                "POST", f"/v1/sessions/{sid}/messages", json={"text": "again", "stream": True}
            ) as s:
                async for line in s.aiter_lines():
                    if line.startswith("data: "):
                        frames.append(json.loads(line[6:]))
            kinds = [f["type"] for f in frames]
            assert kinds[0] == "speaker" and kinds[-1] == "done"
            assert kinds.index("emotion") > max(i for i, k in enumerate(kinds) if k == "text")
            assert "".join(f["delta"] for f in frames if f["type"] == "text") == "Welcome."
            r = await c.delete("/v1/characters/seraphina")
            assert r.status_code == 200
            assert (await c.get("/v1/characters/seraphina")).status_code == 404

    asyncio.run(go())


def test_cli_add_list_show_rm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from ocak.characters.tavern import png_with_card
    from ocak.cli.main import app

    monkeypatch.setenv("OCAK_DATA_DIR", str(tmp_path / "data"))
    png = tmp_path / "seraphina.png"
    png.write_bytes(png_with_card(json.loads((EXAMPLES / "seraphina.json").read_text())))
    runner = CliRunner()
    r = runner.invoke(app, ["characters", "add", str(EXAMPLES / "bram.yaml")])
    assert r.exit_code == 0 and "added bram" in r.output, r.output
    r = runner.invoke(app, ["characters", "add", str(png), "--id", "sera"])
    assert r.exit_code == 0 and "3 lore entries" in r.output, r.output
    r = runner.invoke(app, ["characters", "list"])
    assert "bram" in r.output and "sera" in r.output and "give_item" in r.output
    r = runner.invoke(app, ["characters", "show", "sera"])
    assert r.exit_code == 0 and "name: Seraphina" in r.output and "Shadow wolves" in r.output
    assert runner.invoke(app, ["characters", "rm", "bram"]).exit_code == 0
    r = runner.invoke(app, ["characters", "show", "bram"])
    assert r.exit_code == 1
    r = runner.invoke(app, ["characters", "add", str(tmp_path / "missing.yaml")])
    assert r.exit_code == 1
    db = store.open_characters_db(tmp_path / "data")
    assert [c.id for c in store.list_characters(db)] == ["sera"]


def test_history_shows_the_characters_own_turns_as_valid_packets(characters_db: Opener) -> None:
    """In-context examples match the schema the model is held to (greeting included)."""
    from ocak.characters.packet import parse_packet

    script = Scripted(wire("Aye.", actions=[{"name": "follow", "parameters": {}}]))
    service = make_service(characters_db, script)
    sid = service.create_session("p1", ["bram"], player_name="Ada").id
    run_turn(service, sid, text="Hello.")
    run_turn(service, sid, text="Follow me.")
    messages = script.requests[-1].messages
    assert messages is not None
    own = [m.content for m in messages if m.role == "assistant"]
    assert len(own) == 2  # the greeting and the first answer
    card = service.card("bram")
    for content in own:
        parse_packet(content, card)


def test_turns_are_usage_records_and_keys_may_be_limited_to_models(tmp_path: Path) -> None:
    """A character turn is a model call like a chat completion: a usage row, key checks."""
    from ocak.store.db import database_path, open_database
    from ocak.store.keys import create_key
    from ocak.store.usage import recent_usage

    script = Scripted(wire("Aye."))

    async def go() -> None:
        engine = FakeEngine("default", script=script, context_length=100_000)
        await engine.load()
        db = open_database(database_path(tmp_path))
        allowed, _ = create_key(db, "game", models=["default"])
        other, _ = create_key(db, "other", models=["elsewhere"])
        app = create_app(Settings(data_dir=tmp_path), EngineRegistry([engine]), db=db)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
            auth = {"Authorization": f"Bearer {allowed}"}
            assert (await c.get("/v1/characters")).status_code == 401
            card = (EXAMPLES / "bram.yaml").read_bytes()
            r = await c.post("/v1/characters/import", content=card, headers=auth)
            assert r.status_code == 201
            r = await c.post(
                "/v1/sessions", json={"player_id": "p", "characters": ["bram"]}, headers=auth
            )
            sid = r.json()["id"]
            r = await c.post(f"/v1/sessions/{sid}/messages", json={"text": "hi"}, headers=auth)
            assert r.status_code == 200, r.text
            turn = r.json()
            r = await c.post(
                f"/v1/sessions/{sid}/messages",
                json={"text": "hi"},
                headers={"Authorization": f"Bearer {other}"},
            )
            assert r.status_code == 403 and r.json()["error"]["param"] == "model"
        rows = [u for u in recent_usage(db) if u.status == "completed"]
        assert len(rows) == 1
        row = rows[0]
        assert (row.model, row.backend, row.key_name) == ("default", "fake:default", "game")
        assert row.prompt_tokens == turn["usage"]["prompt_tokens"] > 0
        assert row.completion_tokens == turn["usage"]["completion_tokens"] > 0
        db.close()

    asyncio.run(go())


def test_cli_chat_talks_to_a_running_server(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from helpers import AppServer
    from ocak.cli.main import app as cli

    script = Scripted(wire("*nods* Welcome, friend.", emotion={"label": "joy", "strength": 7}))
    engine = FakeEngine("default", script=script, context_length=100_000)
    app = create_app(Settings(data_dir=tmp_path), EngineRegistry([engine]))
    with AppServer(app) as server:
        httpx.post(
            f"{server.url}/v1/characters/import", content=(EXAMPLES / "bram.yaml").read_bytes()
        ).raise_for_status()
        r = CliRunner().invoke(
            cli,
            ["characters", "chat", "bram", "--url", server.url, "--name", "Ada"],
            input="Hello!\n/event a wolf howls\n/exit\n",
        )
    assert r.exit_code == 0, r.output
    assert "What do you need, Ada?" in r.output  # the greeting
    assert r.output.count("Bram: Welcome, friend.") == 2  # a line, then an event
    assert "[joy 0.7]" in r.output and "*nods*" in r.output
    assert "[Event: a wolf howls]" in "\n".join(
        m.content for m in script.requests[-1].messages or []
    )


def test_a_packet_larger_than_the_servers_answer_cap_is_refused(characters_db: Opener) -> None:
    service = make_service(characters_db, Scripted(wire()))
    service.max_tokens_cap = 64
    sid = service.create_session("p1", ["bram"], greet=False).id
    with pytest.raises(InvalidRequest, match="max-tokens-limit"):
        run_turn(service, sid, text="hi")
    service.max_tokens_cap = 4096
    assert done(run_turn(service, sid, text="hi")).text == "Aye."
