"""Pure logic of the character engine: cards, import, lorebook, packets, directions, turns."""

from __future__ import annotations

import base64
import json
import random
import struct
import zlib
from typing import Any

import llguidance as llg
import pytest

from ocak.characters.cards import CardError, Character, load_card, parse_card_bytes
from ocak.characters.directions import StageFilter, TextFieldStream, split_directions
from ocak.characters.lorebook import activate
from ocak.characters.packet import (
    PacketError,
    packet_token_bound,
    parse_packet,
    wire_schema,
)
from ocak.characters.relationship import RelationshipState, label
from ocak.characters.tavern import PNG_SIGNATURE, png_with_card, read_png_card
from ocak.characters.turns import choose_speaker
from ocak.errors import InvalidRequest
from paths import EXAMPLES as PROJECT_EXAMPLES

EXAMPLES = PROJECT_EXAMPLES / "characters"


def words(text: str) -> int:
    return len(text.split())


@pytest.fixture
def bram() -> Character:
    return load_card(EXAMPLES / "bram.yaml")


@pytest.fixture
def seraphina() -> Character:
    return load_card(EXAMPLES / "seraphina.json")


# -- cards and import -----------------------------------------------------------------


def test_example_cards_load(bram: Character, seraphina: Character) -> None:
    assert [a.name for a in bram.actions] == ["give_item", "follow", "attack"]
    assert bram.lorebook is not None and bram.greeting
    assert seraphina.id == "seraphina"
    assert "{{char}}" not in seraphina.persona and "Seraphina" in seraphina.persona
    assert "{{user}}" in seraphina.backstory  # filled with the player's name per prompt
    assert seraphina.lorebook is not None
    assert [e.name for e in seraphina.lorebook.entries] == [
        "Shadow wolves",
        "Blackmire",
        "Moonpetal",
    ]
    assert seraphina.lorebook.token_budget == 200
    assert [a.name for a in seraphina.actions] == ["heal"]  # from extensions.ocak
    assert seraphina.greeting and seraphina.greeting.startswith("*Seraphina kneels")


def test_png_card_round_trip(seraphina: Character) -> None:
    raw = json.loads((EXAMPLES / "seraphina.json").read_text())
    png = png_with_card(raw)
    assert png.startswith(PNG_SIGNATURE)
    assert read_png_card(png) == raw
    card = parse_card_bytes(png, filename="seraphina.png", card_id="sera")
    assert card.id == "sera"
    assert card.model_dump(exclude={"id"}) == seraphina.model_dump(exclude={"id"})


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_png_itxt_compressed_chunk_is_read() -> None:
    card = {"spec": "chara_card_v2", "data": {"name": "Ivy", "description": "A gardener."}}
    text = base64.b64encode(json.dumps(card).encode())
    itxt = b"chara\0" + b"\x01\x00" + b"\0" + b"\0" + zlib.compress(text)
    png = PNG_SIGNATURE + _chunk(b"iTXt", itxt) + _chunk(b"IEND", b"")
    assert parse_card_bytes(png).name == "Ivy"


def test_png_without_card_or_with_bad_crc_is_refused() -> None:
    bare = PNG_SIGNATURE + _chunk(b"IEND", b"")
    with pytest.raises(CardError, match="no character card"):
        parse_card_bytes(bare)
    good = png_with_card({"spec": "chara_card_v2", "data": {"name": "X"}})
    broken = good[:-20] + bytes([good[-20] ^ 0xFF]) + good[-19:]
    with pytest.raises(CardError):
        parse_card_bytes(broken)


def test_v1_flat_card_imports() -> None:
    card = parse_card_bytes(
        json.dumps(
            {"name": "Old Tom", "description": "A fisherman.", "first_mes": "Ahoy."}
        ).encode()
    )
    assert (card.id, card.name, card.greeting) == ("old-tom", "Old Tom", "Ahoy.")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"emotions": ["joy", "rage"]}, "unknown emotion"),
        (
            {"actions": [{"name": "cast", "parameters": {"type": "object", "oneOf": []}}]},
            "'oneOf'",
        ),
        ({"actions": [{"name": "cast", "parameters": {"type": "string"}}]}, "type 'object'"),
        ({"actions": [{"name": "a"}, {"name": "a"}]}, "share a name"),
        ({"id": "Bad Id"}, "id"),
    ],
)
def test_bad_cards_are_refused_naming_the_problem(change: dict[str, Any], message: str) -> None:
    base = {"id": "npc", "name": "Npc", "persona": "Someone."}
    with pytest.raises(CardError, match=message):
        parse_card_bytes(json.dumps({**base, **change}).encode())


def test_yaml_knowledge_as_text_becomes_a_list() -> None:
    card = parse_card_bytes(b"name: Ann\npersona: A cook.\nknowledge: |\n  - soup\n  - bread\n")
    assert card.id == "ann"
    assert card.knowledge == ["soup", "bread"]


# -- lorebook ---------------------------------------------------------------------------


def test_lore_activates_by_key_in_recent_messages(seraphina: Character) -> None:
    book = seraphina.lorebook
    assert [e.name for e in activate(book, ["The WOLVES chased me!"], words)] == ["Shadow wolves"]
    assert activate(book, ["Hello there."], words) == []
    # Whole words only: "wolfish" does not contain the key "wolf".
    assert activate(book, ["a wolfish grin"], words) == []
    # Only the last scan_depth (4) messages are scanned.
    old = ["wolves", "a", "b", "c", "d"]
    assert activate(book, old, words) == []
    assert [e.name for e in activate(book, old[:4], words)] == ["Shadow wolves"]


def test_lore_budget_keeps_higher_priority_and_orders_by_insertion(seraphina: Character) -> None:
    book = seraphina.lorebook
    assert book is not None
    text = ["wolves from the Blackmire, and a moonpetal"]
    assert [e.name for e in activate(book, text, words)] == [
        "Shadow wolves",
        "Blackmire",
        "Moonpetal",
    ]
    sizes = {e.name: words(e.content) for e in book.entries}
    # Room for the two highest priorities only (wolves 10, moonpetal 8), in insertion order.
    budget = sizes["Shadow wolves"] + sizes["Moonpetal"]
    chosen = activate(book, text, words, budget=budget)
    assert [e.name for e in chosen] == ["Shadow wolves", "Moonpetal"]
    assert sum(e.tokens for e in chosen) <= budget


def test_selective_and_constant_entries() -> None:
    card = Character.model_validate(
        {
            "id": "x",
            "name": "X",
            "persona": "p",
            "lorebook": {
                "entries": [
                    {
                        "keys": ["king"],
                        "secondary_keys": ["crown"],
                        "selective": True,
                        "content": "The crown was stolen.",
                        "name": "crown",
                    },
                    {"keys": [], "constant": True, "content": "Magic is real.", "name": "magic"},
                    {"keys": ["king"], "enabled": False, "content": "off", "name": "off"},
                ]
            },
        }
    )
    assert [e.name for e in activate(card.lorebook, ["the king"], words)] == ["magic"]
    assert [e.name for e in activate(card.lorebook, ["the king's crown"], words)] == [
        "crown",
        "magic",
    ]


# -- packets ----------------------------------------------------------------------------


def packet(**over: Any) -> str:
    base: dict[str, Any] = {
        "text": "Here you go.",
        "narration": "",
        "emotion": {"label": "joy", "strength": 6},
        "actions": [{"name": "give_item", "parameters": {"item": "dagger"}}],
        "relationship": {"trust": 1, "respect": 0, "familiarity": 1},
    }
    base.update(over)
    return json.dumps(base)


def test_valid_packet_parses(bram: Character) -> None:
    p = parse_packet(packet(text="*grunts* Here you go. (hands it over)"), bram)
    assert p.text == "Here you go."
    assert p.narration == "grunts; hands it over"
    assert (p.emotion, p.strength) == ("joy", 0.6)
    assert p.actions == [{"name": "give_item", "parameters": {"item": "dagger"}}]
    assert p.change == {"trust": 1, "respect": 0, "familiarity": 1}


@pytest.mark.parametrize(
    "bad",
    [
        {"actions": [{"name": "give_item", "parameters": {"item": "castle"}}]},  # not in enum
        {"actions": [{"name": "give_item", "parameters": {}}]},  # missing required
        {"actions": [{"name": "fly", "parameters": {}}]},  # undeclared action
        {"emotion": {"label": "disgust", "strength": 3}},  # not in Bram's set
        {"emotion": {"label": "joy", "strength": 11}},
        {"relationship": {"trust": 9, "respect": 0, "familiarity": 0}},
        {"text": "x" * 161},  # Bram's text_max_chars is 160
        {"text": ""},
    ],
)
def test_invalid_packets_are_refused(bram: Character, bad: dict[str, Any]) -> None:
    with pytest.raises(PacketError):
        parse_packet(packet(**bad), bram)


def test_truncated_or_non_json_output_is_refused(bram: Character) -> None:
    with pytest.raises(PacketError, match="not JSON"):
        parse_packet(packet()[:-5], bram)
    with pytest.raises(PacketError, match="not JSON"):
        parse_packet("Hello!", bram)


def test_packet_without_declared_actions_takes_none() -> None:
    card = Character(id="q", name="Q", persona="p")
    assert "actions" not in wire_schema(card)["properties"]
    assert parse_packet(packet(actions=[]), card).actions == []
    with pytest.raises(PacketError):
        parse_packet(packet(), card)


@pytest.mark.parametrize("name", ["bram.yaml", "seraphina.json"])
def test_wire_schema_compiles_in_llguidance_with_every_string_bounded(name: str) -> None:
    card = load_card(EXAMPLES / name)
    schema = wire_schema(card)
    grammar = llg.LLMatcher.grammar_from_json_schema(schema)
    is_error, messages = llg.LLMatcher.validate_grammar_with_warnings(grammar)
    assert not is_error, messages

    def strings(node: Any) -> list[dict[str, Any]]:
        if isinstance(node, dict):
            found = [node] if node.get("type") == "string" else []
            return found + [s for v in node.values() for s in strings(v)]
        if isinstance(node, list):
            return [s for v in node for s in strings(v)]
        return []

    assert all("maxLength" in s or "enum" in s for s in strings(schema))


def test_token_bound_covers_the_longest_packet(bram: Character) -> None:
    longest = packet(
        text="x" * bram.text_max_chars,
        narration="y" * 100,
        emotion={"label": "interest", "strength": 10},
        actions=[{"name": "attack", "parameters": {"target": "z" * 40}}] * 2,
        relationship={"trust": -5, "respect": -5, "familiarity": 5},
    )
    parse_packet(longest, bram)
    assert len(longest) <= packet_token_bound(bram)  # a token is at least one character


# -- stage directions and streaming ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "spoken", "narration"),
    [
        ("*smiles* Hello *waves* there.", "Hello there.", ["smiles", "waves"]),
        ("Fine *shrugs*.", "Fine.", ["shrugs"]),
        ("Hi(grins)there", "Hi there", ["grins"]),
        ("[laughs] Really?", "Really?", ["laughs"]),
        ("I *really* mean it *sigh", "I mean it", ["really", "sigh"]),
        ("  plain   words ", "plain words", []),
    ],
)
def test_split_directions(text: str, spoken: str, narration: list[str]) -> None:
    assert split_directions(text) == (spoken, narration)


def test_streamed_text_equals_collected_text_whatever_the_chunking() -> None:
    rng = random.Random(7)
    alphabet = [*list("abc *()[]  .,!?xyz"), "é", "😀", "\n", '"', "\\"]
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        raw = json.dumps({"text": text, "narration": ""}, ensure_ascii=rng.random() < 0.5)
        raw = raw.replace('{"text": ', '{"text": ', 1)
        field, stage = TextFieldStream(), StageFilter()
        out, i = [], 0
        while i < len(raw):
            n = rng.randint(1, 6)
            out.append(stage.feed(field.feed(raw[i : i + n])))
            i += n
        stage.finish()
        spoken, narration = split_directions(text)
        assert "".join(out) == spoken
        assert stage.narration == narration
        assert field.closed
        assert not any(c in spoken for c in "*()[]")


def test_text_field_stream_waits_for_the_text_key() -> None:
    field = TextFieldStream()
    assert field.feed('{"emotion": {"label": "joy"}, "text": "hi"}') == ""
    field = TextFieldStream()
    assert field.feed('{"text": "a\\') == "a"
    assert field.feed('nb"') == "\nb"


# -- relationship and turn-taking ------------------------------------------------------


def test_relationship_clamps_and_labels() -> None:
    r = RelationshipState(trust=98, familiarity=0)
    applied = r.apply({"trust": 5, "respect": -9, "familiarity": -3})
    assert (r.trust, r.respect, r.familiarity) == (100, -5, 0)
    assert applied == {"trust": 2, "respect": -5, "familiarity": 0}
    assert label("trust", 100) == "devoted" and label("familiarity", 0) == "stranger"
    assert "trust 100 (devoted)" in r.describe()


def members() -> list[Character]:
    return [
        Character(id="bram", name="Bram Ironhand", persona="p"),
        Character(id="mira", name="Mira", persona="p"),
        Character(id="old-tom", name="Tom", persona="p"),
    ]


def test_turn_taking() -> None:
    m = members()
    assert choose_speaker(m, "Mira, and you Bram?").id == "mira"  # named first wins
    assert choose_speaker(m, "What about you, bram?").id == "bram"  # first name, any case
    assert choose_speaker(m, "hey old tom").id == "old-tom"  # the id works too
    assert choose_speaker(m, "Tomorrow then.").id == "bram"  # whole words only; nobody spoke
    spoke = {"bram": 5, "mira": 3}
    assert choose_speaker(m, "Anyone?", last_spoke=spoke).id == "old-tom"  # never spoke
    spoke["old-tom"] = 7
    assert choose_speaker(m, "Anyone?", last_spoke=spoke).id == "mira"  # waited longest
    assert choose_speaker(m, "Bram!", explicit="mira").id == "mira"
    with pytest.raises(InvalidRequest, match="not in this session"):
        choose_speaker(m, "", explicit="ghost")
