"""What ocak keeps about a player, and deleting all of it on request.

A player appears in the characters store only (``characters.db``): sessions
(``player_id``), and through them members, turns (the transcript), witnesses and
summaries; relationships and memories name the player directly. Usage records
(``ocak.db``) hold API keys, models and token counts, never a player or text.
Deletion runs in one transaction: either everything about the player goes, or
nothing does.
"""

from __future__ import annotations

from ocak.errors import InvalidRequest
from ocak.store.db import Database

# (table, what a row is) in the order they are counted and deleted.
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
_COUNT = {
    "sessions": "SELECT count(*) FROM sessions WHERE player_id = ?",
    "members": f"SELECT count(*) FROM members WHERE session_id IN ({_SESSIONS})",
    "turns": f"SELECT count(*) FROM turns WHERE session_id IN ({_SESSIONS})",
    "witnesses": "SELECT count(*) FROM witnesses WHERE turn_id IN "
    f"(SELECT id FROM turns WHERE session_id IN ({_SESSIONS}))",
    "summaries": f"SELECT count(*) FROM summaries WHERE session_id IN ({_SESSIONS})",
    "relationships": "SELECT count(*) FROM relationships WHERE player_id = ?",
    "memories": "SELECT count(*) FROM memories WHERE player_id = ?",
}
_DELETE = (
    # witnesses, members and turns go with their session (ON DELETE CASCADE); summaries
    # have no foreign key, so they go first, by session.
    f"DELETE FROM summaries WHERE session_id IN ({_SESSIONS})",
    "DELETE FROM witnesses WHERE turn_id IN "
    f"(SELECT id FROM turns WHERE session_id IN ({_SESSIONS}))",
    f"DELETE FROM turns WHERE session_id IN ({_SESSIONS})",
    f"DELETE FROM members WHERE session_id IN ({_SESSIONS})",
    "DELETE FROM sessions WHERE player_id = ?",
    "DELETE FROM relationships WHERE player_id = ?",
    "DELETE FROM memories WHERE player_id = ?",
)


def player_data(db: Database, player_id: str) -> dict[str, int]:
    """How many rows of each kind the characters store holds about ``player_id``."""
    return {table: int(db.execute(sql, (player_id,))[0][0]) for table, sql in _COUNT.items()}


def delete_player(db: Database, player_id: str) -> dict[str, int]:
    """Delete everything about ``player_id``; returns the rows removed, per table."""
    if not player_id.strip():
        raise InvalidRequest("a player id is needed", param="player_id")
    with db.transaction() as conn:
        counts = {
            table: int(conn.execute(sql, (player_id,)).fetchone()[0])
            for table, sql in _COUNT.items()
        }
        for statement in _DELETE:
            conn.execute(statement, (player_id,))
    return counts


def describe(counts: dict[str, int]) -> str:
    """``2 sessions, 14 turns (the transcript), 9 memories`` (kinds with rows only)."""
    parts = [f"{counts[t]} {what}" for t, what in PLAYER_TABLES if counts.get(t)]
    return ", ".join(parts) or "nothing (no data about this player)"
