"""What ocak keeps about a player, and deleting all of it on request.

A player appears in the characters store only (``characters.db``): sessions
(``player_id``), and through them members, turns (the transcript), witnesses and
summaries; relationships and memories name the player directly. Usage records
(``ocak.db``) hold API keys, models and token counts, never a player or text.
Deletion runs in one transaction: either everything about the player goes, or
nothing does; kept recordings of the player's sessions go after it.
"""

from __future__ import annotations

from collections.abc import Callable

from ocak.characters.recordings import Recordings
from ocak.characters.store import purge_deleted
from ocak.errors import InvalidRequest
from ocak.store.db import Store

# (table, what a row is), in the order ``describe`` names them.
PLAYER_TABLES = (
    ("sessions", "sessions"),
    ("members", "session memberships"),
    ("turns", "turns (the transcript)"),
    ("witnesses", "witness records"),
    ("summaries", "summaries"),
    ("relationships", "relationships"),
    ("memories", "memories"),
)
_SESSIONS = "SELECT id FROM sessions WHERE player_id = ?"
# Which rows of each table are the player's (each condition takes the player id once).
_WHERE = {
    "sessions": "player_id = ?",
    "members": f"session_id IN ({_SESSIONS})",
    "turns": f"session_id IN ({_SESSIONS})",
    "witnesses": f"turn_id IN (SELECT id FROM turns WHERE session_id IN ({_SESSIONS}))",
    "summaries": f"session_id IN ({_SESSIONS})",
    "relationships": "player_id = ?",
    "memories": "player_id = ?",
}
# Rows found through a session go before the sessions (summaries have no foreign key).
_DELETE_ORDER = (
    "summaries",
    "witnesses",
    "turns",
    "members",
    "sessions",
    "relationships",
    "memories",
)


def _counts(run: Callable[[str], int]) -> dict[str, int]:
    return {t: run(f"SELECT count(*) FROM {t} WHERE {w}") for t, w in _WHERE.items()}


def player_data(db: Store, player_id: str) -> dict[str, int]:
    """How many rows of each kind the characters store holds about ``player_id``."""
    return _counts(lambda sql: int(db.execute(sql, (player_id,))[0][0]))


def delete_player(db: Store, player_id: str, recordings: Recordings | None) -> dict[str, int]:
    """Delete everything about ``player_id`` and their ``recordings``; returns the rows
    removed, per table."""
    if not player_id.strip():
        raise InvalidRequest("a player id is needed", param="player_id")
    with db.transaction() as conn:
        counts = _counts(lambda sql: int(conn.execute(sql, (player_id,)).fetchone()[0]))
        sessions = [r[0] for r in conn.execute(_SESSIONS, (player_id,))]
        for table in _DELETE_ORDER:
            conn.execute(f"DELETE FROM {table} WHERE {_WHERE[table]}", (player_id,))
    if any(counts.values()):
        purge_deleted(db)
    if recordings is not None:
        for session_id in sessions:
            recordings.forget(session_id)
    return counts


def describe(counts: dict[str, int]) -> str:
    """``2 sessions, 14 turns (the transcript), 9 memories`` (kinds with rows only)."""
    parts = [f"{counts[t]} {what}" for t, what in PLAYER_TABLES if counts.get(t)]
    return ", ".join(parts) or "nothing (no data about this player)"
