"""``ocak data``: what ocak keeps about a player, and deleting it."""

from __future__ import annotations

from pathlib import Path

import typer

from ocak.characters.players import delete_player, describe, player_data
from ocak.characters.recordings import Recordings
from ocak.cli.characters import open_store
from ocak.cli.common import err_console, fail_on
from ocak.config import Settings
from ocak.errors import OcakError

app = typer.Typer(help="A player's data: show it, delete it.", no_args_is_help=True)

CONFIG = typer.Option(None, "--config", help="YAML settings file (for data_dir).")
PLAYER = typer.Option(..., "--player", help="The player id the game sent with its sessions.")


@app.command("show")
def show(player: str = PLAYER, config: Path = CONFIG) -> None:
    """How much ocak keeps about a player (sessions, turns, memories, relationships...)."""
    db = open_store(config)
    try:
        print(f"player {player}: {describe(player_data(db, player))}")
    finally:
        db.close()


@app.command("rm")
def rm(player: str = PLAYER, config: Path = CONFIG) -> None:
    """Delete everything ocak keeps about a player, in one transaction, and say what went."""
    db = open_store(config)
    try:
        kept = Recordings.in_data_dir(Settings.load(config).data_dir, keep=False)
        removed = delete_player(db, player, kept)
    except OcakError as exc:
        fail_on(exc)
    finally:
        db.close()
    err_console.print(f"Deleted player '{player}': {describe(removed)}.", highlight=False)
