"""SillyTavern character cards (``chara_card_v2``, and v1) as ocak characters.

A card is JSON, or a PNG image whose ``chara`` text chunk (``tEXt``, ``zTXt`` or
``iTXt``) holds the card's JSON in base64. PNG chunks are read with the standard
library. The embedded ``character_book`` becomes the character's lorebook;
``{{char}}`` is replaced by the character's name (``{{user}}`` stays, and is
filled with the player's name in each prompt). ocak-only fields (emotions,
actions, model) may ride along in ``data.extensions.ocak``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import struct
import zlib
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ocak.characters.cards import (
    CardError,
    Character,
    Lorebook,
    LoreEntry,
    describe,
    slug,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CARD_KEYWORDS = ("chara", "ccv3")


class TavernBookEntry(BaseModel):
    model_config = ConfigDict(extra="allow")

    keys: list[str] = Field(default_factory=list)
    content: str = ""
    extensions: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True
    insertion_order: int = 100
    case_sensitive: bool | None = None
    name: str | None = None
    priority: int | None = None
    id: int | None = None
    comment: str | None = None
    selective: bool | None = None
    secondary_keys: list[str] | None = None
    constant: bool | None = None
    position: str | None = None


class TavernBook(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str | None = None
    description: str | None = None
    scan_depth: int | None = None
    token_budget: int | None = None
    recursive_scanning: bool | None = None
    extensions: dict[str, Any] = Field(default_factory=dict)
    entries: list[TavernBookEntry] = Field(default_factory=list)


class TavernCardData(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    description: str = ""
    personality: str = ""
    scenario: str = ""
    first_mes: str = ""
    mes_example: str = ""
    creator_notes: str = ""
    system_prompt: str = ""
    post_history_instructions: str = ""
    alternate_greetings: list[str] = Field(default_factory=list)
    character_book: TavernBook | None = None
    tags: list[str] = Field(default_factory=list)
    creator: str = ""
    character_version: str = ""
    extensions: dict[str, Any] = Field(default_factory=dict)


class TavernCardV2(BaseModel):
    """A SillyTavern character card, spec ``chara_card_v2``."""

    model_config = ConfigDict(extra="allow")

    spec: str = Field("chara_card_v2", pattern=r"^chara_card_v[23]$")
    spec_version: str = "2.0"
    data: TavernCardData


def is_tavern_card(data: dict[str, Any]) -> bool:
    spec = data.get("spec")
    if isinstance(spec, str) and spec.startswith("chara_card_v"):
        return True
    # v1 cards are flat, with the SillyTavern field names and no ocak ones.
    return "persona" not in data and ("first_mes" in data or "mes_example" in data)


def _text(value: str, name: str) -> str:
    for macro in ("{{char}}", "<BOT>", "{{Char}}"):
        value = value.replace(macro, name)
    return value.replace("<USER>", "{{user}}").strip()


def _lorebook(book: TavernBook, name: str) -> Lorebook:
    entries = []
    for e in book.entries:
        whole = e.extensions.get("match_whole_words")
        entries.append(
            LoreEntry(
                keys=[k for k in e.keys if k.strip()],
                content=_text(e.content, name),
                name=e.name or e.comment or None,
                secondary_keys=[k for k in (e.secondary_keys or []) if k.strip()],
                selective=bool(e.selective),
                constant=bool(e.constant),
                enabled=e.enabled,
                case_sensitive=bool(e.case_sensitive),
                whole_words=whole if isinstance(whole, bool) else True,
                insertion_order=e.insertion_order,
                priority=e.priority if e.priority is not None else 10,
            )
        )
    return Lorebook(
        name=book.name,
        entries=entries,
        scan_depth=min(max(book.scan_depth or 4, 1), 100),
        token_budget=min(max(book.token_budget or 256, 16), 4096),
    )


def tavern_to_character(
    raw: dict[str, Any], *, card_id: str | None = None, source: str = ""
) -> Character:
    """Map a v2 (or v1, flat) card onto ocak's card."""
    where = f"{source}: " if source else ""
    payload = raw if isinstance(raw.get("data"), dict) else {"data": raw}
    try:
        card = TavernCardV2.model_validate(
            {**payload, "spec": payload.get("spec", "chara_card_v2")}
        )
    except ValidationError as exc:
        raise CardError(where + "not a valid chara_card_v2: " + describe(exc)) from exc
    d = card.data
    name = d.name.strip() or "Character"
    persona = _text(d.description, name)
    if d.personality.strip():
        persona += f"\nPersonality: {_text(d.personality, name)}"
    if d.system_prompt.strip():
        persona += f"\n{_text(d.system_prompt, name)}"
    style = _text(d.mes_example.replace("<START>", ""), name)
    fields: dict[str, Any] = {
        "id": card_id or slug(name),
        "name": name,
        "persona": persona.strip() or name,
        "backstory": _text(d.scenario, name)[:8000],
        "speaking_style": (f"Example dialogue:\n{style}" if style else "")[:4000],
        "greeting": _text(d.first_mes, name)[:4000] or None,
    }
    if d.character_book is not None and d.character_book.entries:
        fields["lorebook"] = _lorebook(d.character_book, name)
    extra = d.extensions.get("ocak")
    if isinstance(extra, dict):
        fields.update({k: v for k, v in extra.items() if k != "id" or card_id is None})
    try:
        return Character.model_validate(fields)
    except ValidationError as exc:
        raise CardError(where + describe(exc)) from exc


# -- PNG ---------------------------------------------------------------------------


def png_chunks(raw: bytes) -> list[tuple[bytes, bytes]]:
    """``(type, data)`` of each chunk, checking lengths and CRCs."""
    if not raw.startswith(PNG_SIGNATURE):
        raise CardError("not a PNG file")
    chunks = []
    pos = len(PNG_SIGNATURE)
    while pos + 12 <= len(raw):
        (length,) = struct.unpack(">I", raw[pos : pos + 4])
        kind = raw[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(raw):
            raise CardError(f"truncated PNG chunk {kind.decode('latin-1')!r}")
        data = raw[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", raw[pos + 8 + length : end])
        if zlib.crc32(kind + data) & 0xFFFFFFFF != crc:
            raise CardError(f"corrupt PNG chunk {kind.decode('latin-1')!r} (bad CRC)")
        chunks.append((kind, data))
        pos = end
        if kind == b"IEND":
            break
    return chunks


def _text_chunk(kind: bytes, data: bytes) -> tuple[str, str] | None:
    """The keyword and text of a tEXt, zTXt or iTXt chunk."""
    keyword, sep, rest = data.partition(b"\0")
    if not sep:
        return None
    key = keyword.decode("latin-1")
    try:
        if kind == b"tEXt":
            return key, rest.decode("latin-1")
        if kind == b"zTXt":
            return key, zlib.decompress(rest[1:]).decode("latin-1")
        if kind == b"iTXt":
            flag, _method = rest[0], rest[1]
            _lang, _, rest = rest[2:].partition(b"\0")
            _translated, _, text = rest.partition(b"\0")
            return key, (zlib.decompress(text) if flag else text).decode("utf-8")
    except (zlib.error, UnicodeDecodeError, IndexError):
        return None
    return None


def read_png_card(raw: bytes, *, source: str = "") -> dict[str, Any]:
    """The card JSON carried by a PNG's ``chara`` (or ``ccv3``) text chunk."""
    where = f"{source}: " if source else ""
    found: dict[str, str] = {}
    for kind, data in png_chunks(raw):
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            item = _text_chunk(kind, data)
            if item is not None and item[0] in CARD_KEYWORDS:
                found[item[0]] = item[1]
    text = found.get("chara") or found.get("ccv3")
    if text is None:
        raise CardError(f"{where}this PNG carries no character card (no 'chara' text chunk)")
    try:
        decoded = base64.b64decode(re.sub(r"\s+", "", text), validate=True)
        card = json.loads(decoded.decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CardError(f"{where}the PNG's 'chara' chunk is not base64 JSON: {exc}") from exc
    if not isinstance(card, dict):
        raise CardError(f"{where}the PNG's card is not a JSON object")
    return card


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_with_card(card: dict[str, Any]) -> bytes:
    """A 1x1 PNG carrying ``card`` in a ``chara`` tEXt chunk, as SillyTavern writes it."""
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\x80\x60\x40")
    text = base64.b64encode(json.dumps(card).encode("utf-8"))
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"tEXt", b"chara\0" + text)
        + _chunk(b"IDAT", pixels)
        + _chunk(b"IEND", b"")
    )
