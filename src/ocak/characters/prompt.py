"""A character's prompt, built so that turns reuse the cached prefix.

Order, most stable first:

1. system: the persona and the packet rules (fixed per character, so sessions
   of one character share them), the player's name and the scene (fixed per
   session), then the summary of older turns (changes only when history is
   folded);
2. the witnessed history in order: the character's own packets as assistant
   messages, everything else (the player, events, other characters) as user
   lines; consecutive lines of one role are merged (templates that require
   alternating roles accept it);
3. last, the new input followed by what changes every turn: who is present,
   the relationship, activated lore and recalled memories.

So turn N+1's prompt starts with turn N's up to its last input line, and the
engine reuses those KV cells.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ocak.characters.cards import Character
from ocak.characters.lorebook import ActiveLore
from ocak.characters.packet import MAX_ACTIONS, STRENGTH_MAX
from ocak.characters.relationship import MAX_STEP, RelationshipState
from ocak.protocol.generation import Message


@dataclass(frozen=True, slots=True)
class Line:
    """A turn as prompts see it (stored turns and the new input alike)."""

    kind: str  # player | event | character | join | leave
    text: str
    speaker: str | None = None
    addressed: str | None = None
    packet: dict[str, Any] | None = None


@dataclass(slots=True)
class PromptParts:
    card: Character
    player: str
    scene: str = ""
    summary: str | None = None
    history: Sequence[Line] = ()
    new: Sequence[Line] = ()
    present: Sequence[str] = ()  # names of the other characters present
    relationship: RelationshipState = field(default_factory=RelationshipState)
    lore: Sequence[ActiveLore] = ()
    memories: Sequence[str] = ()
    names: dict[str, str] = field(default_factory=dict)  # character id -> name


def fill(text: str, player: str) -> str:
    return text.replace("{{user}}", player).replace("{{User}}", player)


def _bullets(items: Sequence[str]) -> str:
    return "\n".join(f"- {item}" for item in items)


def _action_line(name: str, description: str, parameters: dict[str, Any]) -> str:
    props = parameters.get("properties") or {}
    args = ", ".join(
        f"{k}: {v.get('type', 'any')}" + (f" one of {v['enum']}" if "enum" in v else "")
        for k, v in props.items()
        if isinstance(v, dict)
    )
    return f"{name}({args})" + (f": {description}" if description else "")


def system_prompt(card: Character, player: str, scene: str = "") -> str:
    """The fixed part: persona and packet rules (no per-turn state here).

    What depends on the player and the scene comes last, so every session with
    this character shares the persona and rules as a cached prefix.
    """
    n = card.name
    parts = [
        f"You are {n}, a character in a game. Stay in character; "
        "never say you are an AI or a language model.",
        f"Persona: {card.persona}",
    ]
    if card.backstory:
        parts.append(f"Backstory: {card.backstory}")
    if card.speaking_style:
        parts.append(f"Speaking style: {card.speaking_style}")
    if card.knowledge:
        parts.append(f"What {n} knows:\n{_bullets(card.knowledge)}")
    if card.goals:
        parts.append(f"{n}'s goals:\n{_bullets(card.goals)}")
    if card.lorebook is not None:
        always = [e.content.strip() for e in card.lorebook.entries if e.constant and e.enabled]
        if always:
            parts.append("World:\n" + "\n".join(always))
    rules = [
        "Answer every turn with one JSON object:",
        f'- "text": only the words {n} says aloud, short; no actions, no asterisks.',
        f'- "narration": what {n} does (gestures, expressions), or "".',
        f'- "emotion": {{"label": one of {", ".join(card.emotions)}; '
        f'"strength": 0 to {STRENGTH_MAX}}}.',
    ]
    if card.actions:
        listed = "\n".join(
            "  - " + _action_line(a.name, a.description, a.parameters) for a in card.actions
        )
        rules.append(
            f'- "actions": up to {MAX_ACTIONS} game actions {n} takes now, '
            f"only from this list, or [] for none:\n{listed}"
        )
    rules.append(
        f'- "relationship": how this exchange changes {n}\'s trust and respect '
        f"(-{MAX_STEP} to {MAX_STEP}) and familiarity (0 to {MAX_STEP}) toward the player."
    )
    parts.append("\n".join(rules))
    parts.append(
        f"{n} is talking with {player}, the player." + (f"\nScene: {scene}" if scene else "")
    )
    return fill("\n\n".join(parts), player)


def render_line(line: Line, parts: PromptParts) -> tuple[str, str]:
    """(role, content) of one line from the character's point of view."""
    card, player = parts.card, parts.player
    if line.kind == "character" and line.speaker == card.id and line.packet is not None:
        wire = line.packet.get("wire") or {"text": line.text}
        return "assistant", json.dumps(wire, ensure_ascii=False, separators=(", ", ": "))
    name = parts.names.get(line.speaker or "", line.speaker or "Someone")
    if line.kind == "player":
        to = parts.names.get(line.addressed or "")
        who = f"{player} (to {to})" if to and to != card.name else player
        return "user", f"{who}: {line.text}"
    if line.kind == "event":
        return "user", f"[Event: {line.text}]"
    if line.kind == "join":
        return "user", f"[{name} joins the conversation]"
    if line.kind == "leave":
        return "user", f"[{name} leaves]"
    narration = (line.packet or {}).get("narration") or ""
    return "user", f"{name}: {line.text}" + (f" ({narration})" if narration else "")


def _merge(pairs: list[tuple[str, str]]) -> list[Message]:
    out: list[Message] = []
    for role, content in pairs:
        if out and out[-1].role == role:
            out[-1] = Message(role, out[-1].content + "\n" + content)
        else:
            out.append(Message(role, content))
    return out


def state_note(parts: PromptParts) -> str:
    """What changes every turn; it closes the prompt so the prefix before it stays cached."""
    card, n = parts.card, parts.card.name
    notes = []
    if parts.present:
        notes.append(f"Also present: {', '.join(parts.present)}.")
    notes.append(f"{n}'s feelings toward {parts.player}: {parts.relationship.describe()}.")
    if parts.lore:
        notes.append("Lore:\n" + "\n".join(fill(e.content, parts.player) for e in parts.lore))
    if parts.memories:
        notes.append(f"{n} remembers:\n{_bullets(parts.memories)}")
    notes.append(f"Reply as {n} with one JSON object.")
    del card
    return "(" + "\n".join(notes) + ")"


def build_messages(parts: PromptParts) -> list[Message]:
    system = system_prompt(parts.card, parts.player, parts.scene)
    if parts.summary:
        system += f"\n\nEarlier in this conversation (summary): {parts.summary}"
    pairs = [render_line(line, parts) for line in parts.history]
    pairs += [render_line(line, parts) for line in parts.new]
    pairs.append(("user", state_note(parts)))
    return [Message("system", system), *_merge(pairs)]


def summary_messages(
    card: Character, player: str, previous: str | None, lines: Sequence[Line], parts: PromptParts
) -> list[Message]:
    """A request to fold older lines into the character's running summary."""
    text = "\n".join(content for _, content in (render_line(line, parts) for line in lines))
    prior = f"Summary so far: {previous}\n\n" if previous else ""
    return [
        Message(
            "system",
            f"You keep the memory of {card.name}, a game character. Write a short summary, in "
            f"the third person, of what happened between {card.name} and {player}: facts, "
            "names, places, promises, items given. Plain sentences, no lists.",
        ),
        Message("user", f"{prior}New conversation:\n{text}\n\nUpdated summary:"),
    ]
