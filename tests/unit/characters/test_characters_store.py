"""The characters store's own rules, on SQLite and on PostgreSQL (the ``characters_db``
fixture): full-text recall, a cut turn remembered as heard, deletion, and turns numbered
as one when two connections (two ocak processes) write to one session at once."""

from __future__ import annotations

import threading
from collections.abc import Callable

from ocak.characters import store
from ocak.store.db import Store

Opener = Callable[[], Store]


def session(db: Store, sid: str = "s1", player: str = "p1") -> store.SessionRow:
    store.create_session(db, sid, player, player.upper(), "", ["bram"])
    row = store.get_session(db, sid)
    assert row is not None
    return row


def said(text: str) -> store.NewTurn:
    return store.NewTurn("player", text, memory=f"P1: {text}")


def test_recall_finds_stemmed_words_for_this_character_and_player_only(
    characters_db: Opener,
) -> None:
    db = characters_db()
    s1 = session(db)
    store.add_turns(db, s1, [said("I spent the night forging horseshoes."), said("Bread is dear.")])
    store.add_turns(db, session(db, "s2", "p2"), [said("I forged a blade.")])
    # "forge" finds "forging" (both engines stem), in the player's own memories.
    assert store.recall(db, "bram", "p1", "Who forges here?") == [
        "P1: I spent the night forging horseshoes."
    ]
    assert store.recall(db, "seraphina", "p1", "forge") == []  # she witnessed nothing
    # Query syntax in the player's words is text, never an operator or SQL.
    for hostile in ('"forge" OR -bread', "forge'); DROP TABLE turns; --", "NEAR(x y)", "*:&|!"):
        store.recall(db, "bram", "p1", hostile)
    assert len(store.session_turns(db, "s1")) == 2


def test_a_cut_turn_is_remembered_as_heard(characters_db: Opener) -> None:
    db = characters_db()
    s1 = session(db)
    reply = store.NewTurn("character", "The key is under the anvil, by the well.", "bram",
                          memory="Bram: The key is under the anvil, by the well.")  # fmt: skip
    (seq,) = store.add_turns(db, s1, [reply])
    store.cut_turn(db, "s1", seq, "The key is under", {"text": "The key is under"},
                   "Bram: The key is under")  # fmt: skip
    assert store.session_turns(db, "s1")[0].text == "The key is under"
    assert store.recall(db, "bram", "p1", "the well") == []  # never heard
    assert store.recall(db, "bram", "p1", "key") == ["Bram: The key is under"]


def test_deleting_a_session_takes_its_memories_and_leaves_the_rest(characters_db: Opener) -> None:
    db = characters_db()
    store.add_turns(db, session(db), [said("My secret word is zanzibar.")])
    store.add_turns(db, session(db, "s2"), [said("My other word is quartz.")])
    assert store.delete_session(db, "s1")
    assert not store.delete_session(db, "s1")
    assert store.get_session(db, "s1") is None and store.session_turns(db, "s1") == []
    assert store.recall(db, "bram", "p1", "zanzibar") == []
    assert store.recall(db, "bram", "p1", "quartz") == ["P1: My other word is quartz."]


def test_two_connections_writing_one_session_number_turns_as_one(characters_db: Opener) -> None:
    first, second = characters_db(), characters_db()
    row = session(first)
    errors: list[BaseException] = []

    def write(db: Store, who: str) -> None:
        try:
            for i in range(15):
                store.add_turns(db, row, [said(f"{who} {i}"), said(f"{who} {i} again")])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=write, args=(db, n)) for db, n in ((first, "a"), (second, "b"))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    turns = store.session_turns(second, "s1")
    assert [t.seq for t in turns] == list(range(1, 61))
    # An exchange's two lines are committed together: never split by the other writer.
    for one, two in zip(turns[::2], turns[1::2], strict=True):
        assert two.text == f"{one.text} again"
