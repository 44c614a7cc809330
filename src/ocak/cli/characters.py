"""``ocak characters``: add, list, show and remove character cards; chat with one.

``add``/``list``/``show``/``rm`` work on the characters store in ocak's data
folder directly (a running server sees the change on its next turn).
``chat`` is a terminal client of a running server's ``/v1/sessions`` API.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import typer
import yaml
from rich.table import Table

from ocak.characters import store
from ocak.characters.cards import load_card
from ocak.cli.common import err_console, fail, fail_on, wide_console
from ocak.config import Settings
from ocak.errors import OcakError
from ocak.store.db import Store

app = typer.Typer(help="Manage characters (NPC cards) and chat with them.", no_args_is_help=True)

CONFIG = typer.Option(None, "--config", help="YAML settings file (for data_dir).")


def open_store(config: Path | None) -> Store:
    """The characters store of the data folder the settings name (exit 2 when it cannot open)."""
    try:
        return store.open_characters_store(Settings.load(config))
    except OcakError as exc:
        fail_on(exc, 2)


@app.command("add")
def add(
    file: Path = typer.Argument(..., help="A card: ocak YAML/JSON, or SillyTavern JSON/PNG."),
    id: str = typer.Option(None, "--id", help="Store it under this id (default: the card's)."),
    config: Path = CONFIG,
) -> None:
    """Add (or replace) a character from a card file."""
    try:
        card = load_card(file, card_id=id)
    except OcakError as exc:
        fail_on(exc)
    db = open_store(config)
    try:
        new = store.put_character(db, card)
    finally:
        db.close()
    lore = len(card.lorebook.entries) if card.lorebook else 0
    verb = "added" if new else "replaced"
    print(f"{verb} {card.id} ({card.name}): {len(card.actions)} actions, {lore} lore entries")


@app.command("list")
def list_cards(config: Path = CONFIG) -> None:
    """List the stored characters."""
    db = open_store(config)
    try:
        cards = store.list_characters(db)
    finally:
        db.close()
    table = Table("id", "name", "model", "emotions", "actions", "lore")
    for c in cards:
        lore = str(len(c.lorebook.entries)) if c.lorebook else "0"
        actions = ", ".join(a.name for a in c.actions) or "-"
        table.add_row(c.id, c.name, c.model, str(len(c.emotions)), actions, lore)
    wide_console().print(table)


@app.command("show")
def show(character_id: str = typer.Argument(...), config: Path = CONFIG) -> None:
    """Print a character's card (YAML)."""
    db = open_store(config)
    try:
        card = store.get_character(db, character_id)
    finally:
        db.close()
    if card is None:
        fail(f"no character '{character_id}'")
    data = card.model_dump(mode="json", exclude_none=True)
    sys.stdout.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


@app.command("rm")
def remove(character_id: str = typer.Argument(...), config: Path = CONFIG) -> None:
    """Remove a character with its memories and relationships."""
    db = open_store(config)
    try:
        removed = store.delete_character(db, character_id)
    finally:
        db.close()
    if not removed:
        fail(f"no character '{character_id}'")
    print(f"removed {character_id}")


HELP = "Type to talk. /event TEXT posts a game event, /exit (or Ctrl-D) quits."


def sse_events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield json.loads(line[6:])


@app.command("chat")
def chat(
    character_id: str = typer.Argument(..., help="The character to talk to."),
    url: str = typer.Option("http://127.0.0.1:8000", "--url", help="A running ocak server."),
    player: str = typer.Option("player", "--player", help="Your player id."),
    name: str = typer.Option(None, "--name", help="What the character calls you."),
    api_key: str = typer.Option(None, "--api-key", envvar="OCAK_API_KEY", help="If needed."),
) -> None:
    """Chat with a character in the terminal, through a running server."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=600) as http:
        try:
            r = http.post(
                "/v1/sessions",
                json={"player_id": player, "player_name": name, "characters": [character_id]},
            )
        except httpx.HTTPError as exc:
            fail(f"cannot reach {url}: {exc} (is `ocak serve` running?)")
        if r.status_code != 201:
            fail(r.json().get("error", {}).get("message", r.text))
        session = r.json()
        err_console.print(f"Session {session['id']}. {HELP}", highlight=False, markup=False)
        for turn in session["turns"]:
            _print_turn(turn.get("speaker") or "", turn)
        while True:
            try:
                line = input(">>> ").strip()
            except (EOFError, KeyboardInterrupt):
                sys.stdout.write("\n")
                return
            if not line:
                continue
            if line in ("/exit", "/quit"):
                return
            body: dict[str, Any] = {"stream": True}
            if line.startswith("/event "):
                body["event"] = line[7:].strip()
            else:
                body["text"] = line
            try:
                _stream_turn(http, session["id"], body)
            except KeyboardInterrupt:
                sys.stdout.write(" [interrupted]\n")
            except httpx.HTTPError as exc:
                err_console.print(f"error: {exc}", highlight=False, markup=False)


def _stream_turn(http: httpx.Client, session_id: str, body: dict[str, Any]) -> None:
    with http.stream("POST", f"/v1/sessions/{session_id}/messages", json=body) as r:
        if r.status_code != 200:
            r.read()
            err_console.print(
                f"error: {r.json()['error']['message']}", highlight=False, markup=False
            )
            return
        for event in sse_events(r):
            kind = event["type"]
            if kind == "speaker":
                sys.stdout.write(f"{event['name']}: ")
            elif kind == "text":
                sys.stdout.write(event["delta"])
            elif kind == "reset":
                sys.stdout.write(" [retrying]\n")
            elif kind == "error":
                err_console.print(
                    f"\nerror: {event['error']['message']}", highlight=False, markup=False
                )
            elif kind == "done":
                sys.stdout.write("\n")
                _print_details(event["turn"])
            sys.stdout.flush()


def _print_turn(speaker: str, turn: dict[str, Any]) -> None:
    sys.stdout.write(f"{speaker}: {turn['text']}\n")
    _print_details(turn)


def _print_details(turn: dict[str, Any]) -> None:
    bits = []
    if turn.get("narration"):
        bits.append(f"*{turn['narration']}*")
    emotion = turn.get("emotion")
    if emotion:
        bits.append(f"[{emotion['label']} {emotion['strength']:.1f}]")
    for action in turn.get("actions") or []:
        bits.append(f"<{action['name']} {json.dumps(action['parameters'])}>")
    rel = turn.get("relationship")
    if rel:
        bits.append(
            "(" + ", ".join(f"{k} {v['value']:.0f} {v['label']}" for k, v in rel.items()) + ")"
        )
    if bits:
        err_console.print("  " + " ".join(bits), highlight=False, markup=False, style="dim")
