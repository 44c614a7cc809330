"""The characters store: cards, sessions, turns, relationships, summaries and memories.

Its own SQLite file, ``characters.db`` in ocak's data folder, in WAL mode with
``synchronous=NORMAL`` (a commit survives ``kill -9``; see ``store.db``), and a
versioned schema (``PRAGMA user_version``) migrated forward when opened. With
``database_url`` the same tables live in PostgreSQL, beside the keys' (their version in
``ocak_characters_schema``), so a session started on one ocak process continues on
another.

A turn is stored with the characters that witnessed it (the session's members
at that moment), and becomes a memory of each of them: a full-text row searched
when the character later meets the same player (SQLite's FTS5 with the Porter
stemmer; PostgreSQL's ``tsvector`` with the English configuration, GIN-indexed). An
exchange (the player's line or event, and the character's packet) is committed in one
transaction before its response is acknowledged; on PostgreSQL under an advisory lock
per session, so two processes never number two turns alike.
"""

from __future__ import annotations

import json
import re
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ocak.characters.cards import Character
from ocak.characters.relationship import RelationshipState
from ocak.config import Settings
from ocak.postgres import to_postgres
from ocak.store.db import Executor, Store, open_database

DB_NAME = "characters.db"
PG_SCHEMA_TABLE = "ocak_characters_schema"

# 1: cards, sessions and members, turns and their witnesses, relationships, summaries;
# the memory index follows, one per engine.
_TABLES = """
    CREATE TABLE characters (
        id TEXT PRIMARY KEY,
        card TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        player_id TEXT NOT NULL,
        player_name TEXT NOT NULL,
        scene TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL
    );
    CREATE TABLE members (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        character_id TEXT NOT NULL,
        joined_seq INTEGER NOT NULL,
        left_seq INTEGER,
        PRIMARY KEY (session_id, character_id, joined_seq)
    );
    CREATE TABLE turns (
        id INTEGER PRIMARY KEY,
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL,
        speaker TEXT,
        addressed TEXT,
        text TEXT NOT NULL DEFAULT '',
        packet TEXT,
        request_id TEXT,
        created_at REAL NOT NULL,
        UNIQUE (session_id, seq)
    );
    CREATE TABLE witnesses (
        turn_id INTEGER NOT NULL REFERENCES turns(id) ON DELETE CASCADE,
        character_id TEXT NOT NULL,
        PRIMARY KEY (turn_id, character_id)
    );
    CREATE INDEX witnesses_character ON witnesses(character_id, turn_id);
    CREATE TABLE relationships (
        character_id TEXT NOT NULL,
        player_id TEXT NOT NULL,
        trust REAL NOT NULL,
        respect REAL NOT NULL,
        familiarity REAL NOT NULL,
        turns INTEGER NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (character_id, player_id)
    );
    CREATE TABLE summaries (
        id INTEGER PRIMARY KEY,
        session_id TEXT NOT NULL,
        character_id TEXT NOT NULL,
        upto_seq INTEGER NOT NULL,
        text TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX summaries_session ON summaries(session_id, character_id, upto_seq);
"""
_SQLITE_MEMORIES = """
    CREATE VIRTUAL TABLE memories USING fts5(
        text,
        character_id UNINDEXED,
        player_id UNINDEXED,
        session_id UNINDEXED,
        seq UNINDEXED,
        kind UNINDEXED,
        tokenize = 'porter unicode61'
    );
"""
# PostgreSQL has no rowid: the two tables ordered by insertion get an identity column of
# that name, so the queries are the same on both engines.
_PG_MEMORIES = """
    ALTER TABLE members ADD COLUMN rowid BIGINT GENERATED ALWAYS AS IDENTITY;
    CREATE TABLE memories (
        rowid BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        text TEXT NOT NULL,
        character_id TEXT NOT NULL,
        player_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL,
        terms tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED
    );
    CREATE INDEX memories_terms ON memories USING GIN (terms);
    CREATE INDEX memories_owner ON memories (character_id, player_id, rowid);
    CREATE INDEX memories_turn ON memories (session_id, seq);
"""
MIGRATIONS: tuple[str, ...] = (_TABLES + _SQLITE_MEMORIES,)
PG_MIGRATIONS: tuple[str, ...] = (to_postgres(_TABLES) + _PG_MEMORIES,)
SCHEMA_VERSION = len(MIGRATIONS)


def characters_db_path(data_dir: Path) -> Path:
    return data_dir / DB_NAME


def open_characters_db(data_dir: Path) -> Store:
    """Open (creating) ``characters.db`` in ``data_dir``, schema up to date. Deleted rows
    are overwritten (``secure_delete``): a forgotten session's lines leave the file."""
    db = open_database(
        characters_db_path(data_dir), migrations=MIGRATIONS, what="the characters database"
    )
    db.execute("PRAGMA secure_delete = ON")
    return db


def open_characters_pg(url: str) -> Store:
    """The characters' tables in the PostgreSQL database at ``url``, schema up to date."""
    from ocak.store.postgres import open_postgres

    return open_postgres(
        url, PG_MIGRATIONS, schema_table=PG_SCHEMA_TABLE, what="the characters store"
    )


def open_characters_store(settings: Settings) -> Store:
    """PostgreSQL when ``database_url`` is set (shared by ocak's processes), else
    ``characters.db`` in the data folder."""
    if settings.database_url:
        return open_characters_pg(settings.database_url)
    return open_characters_db(settings.data_dir)


def session_lock(session_id: str) -> int:
    """The advisory lock of one session's writes (negative: key ids, which the rate
    limits lock, are positive)."""
    return -1 - (zlib.crc32(session_id.encode()) & 0x7FFFFFFF)


# -- characters ----------------------------------------------------------------------


def put_character(db: Store, card: Character) -> bool:
    """Store a card (replacing one with the same id); True when it is new."""
    now = time.time()
    body = card.model_dump_json(exclude_none=True)
    with db.transaction() as conn:
        exists = conn.execute("SELECT 1 FROM characters WHERE id = ?", (card.id,)).fetchone()
        conn.execute(
            "INSERT INTO characters (id, card, created_at, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET card = excluded.card, updated_at = excluded.updated_at",
            (card.id, body, now, now),
        )
    return exists is None


def get_character(db: Store, character_id: str) -> Character | None:
    rows = db.execute("SELECT card FROM characters WHERE id = ?", (character_id,))
    return Character.model_validate_json(rows[0][0]) if rows else None


def list_characters(db: Store) -> list[Character]:
    rows = db.execute("SELECT card FROM characters ORDER BY id")
    return [Character.model_validate_json(r[0]) for r in rows]


def delete_character(db: Store, character_id: str) -> bool:
    """Remove a card with its memories, summaries and relationships (turns stay in sessions)."""
    with db.transaction() as conn:
        cur = conn.execute("DELETE FROM characters WHERE id = ?", (character_id,))
        if cur.rowcount:
            conn.execute("DELETE FROM memories WHERE character_id = ?", (character_id,))
            conn.execute("DELETE FROM summaries WHERE character_id = ?", (character_id,))
            conn.execute("DELETE FROM relationships WHERE character_id = ?", (character_id,))
            conn.execute(
                "UPDATE members SET left_seq = COALESCE(left_seq, 0) WHERE character_id = ?",
                (character_id,),
            )
    return bool(cur.rowcount)


# -- sessions ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionRow:
    id: str
    player_id: str
    player_name: str
    scene: str
    created_at: float


@dataclass(frozen=True, slots=True)
class TurnRow:
    seq: int
    kind: str  # player | event | character | join | leave
    speaker: str | None
    addressed: str | None
    text: str
    packet: dict[str, Any] | None
    created_at: float


@dataclass(frozen=True, slots=True)
class NewTurn:
    kind: str
    text: str
    speaker: str | None = None
    addressed: str | None = None
    packet: dict[str, Any] | None = None
    memory: str | None = None  # the line remembered by witnesses (None: not remembered)


def create_session(
    db: Store, session_id: str, player_id: str, player_name: str, scene: str, members: list[str]
) -> None:
    with db.transaction() as conn:
        conn.execute(
            "INSERT INTO sessions (id, player_id, player_name, scene, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (session_id, player_id, player_name, scene, time.time()),
        )
        for character_id in members:
            conn.execute(
                "INSERT INTO members (session_id, character_id, joined_seq) VALUES (?, ?, 0)",
                (session_id, character_id),
            )


def get_session(db: Store, session_id: str) -> SessionRow | None:
    rows = db.execute(
        "SELECT id, player_id, player_name, scene, created_at FROM sessions WHERE id = ?",
        (session_id,),
    )
    return SessionRow(*rows[0]) if rows else None


def active_members(db: Store, session_id: str) -> list[str]:
    """The session's current characters, in the order they joined."""
    rows = db.execute(
        "SELECT character_id FROM members WHERE session_id = ? AND left_seq IS NULL "
        "ORDER BY joined_seq, rowid",
        (session_id,),
    )
    return [r[0] for r in rows]


def _active(conn: Executor, session_id: str) -> list[str]:
    rows = conn.execute(
        "SELECT character_id FROM members WHERE session_id = ? AND left_seq IS NULL "
        "ORDER BY joined_seq, rowid",
        (session_id,),
    ).fetchall()
    return [r[0] for r in rows]


def _next_seq(conn: Executor, session_id: str) -> int:
    row = conn.execute(
        "SELECT COALESCE(MAX(seq), 0) FROM turns WHERE session_id = ?", (session_id,)
    ).fetchone()
    return int(row[0]) + 1


def _insert_turn(
    conn: Executor,
    session: SessionRow,
    turn: NewTurn,
    witnesses: Sequence[str],
    request_id: str | None,
) -> int:
    seq = _next_seq(conn, session.id)
    row = conn.execute(
        "INSERT INTO turns (session_id, seq, kind, speaker, addressed, text, packet, request_id, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (
            session.id,
            seq,
            turn.kind,
            turn.speaker,
            turn.addressed,
            turn.text,
            None if turn.packet is None else json.dumps(turn.packet, ensure_ascii=False),
            request_id,
            time.time(),
        ),
    )
    turn_id = int(row.fetchone()[0])
    for character_id in witnesses:
        conn.execute(
            "INSERT INTO witnesses (turn_id, character_id) VALUES (?, ?)", (turn_id, character_id)
        )
        if turn.memory:
            conn.execute(
                "INSERT INTO memories (text, character_id, player_id, session_id, seq, kind) "
                "VALUES (?, ?, ?, ?, ?, 'turn')",
                (turn.memory, character_id, session.player_id, session.id, seq),
            )
    return seq


def add_turns(
    db: Store,
    session: SessionRow,
    turns: Sequence[NewTurn],
    *,
    relationship: tuple[str, RelationshipState] | None = None,
    request_id: str | None = None,
) -> list[int]:
    """Commit an exchange in one transaction; returns the turns' sequence numbers.

    Each turn is witnessed by the characters in the session when it is stored;
    a ``join`` turn adds its speaker first, a ``leave`` turn removes it after.
    """
    seqs = []
    with db.transaction(lock=session_lock(session.id)) as conn:
        for turn in turns:
            if turn.kind == "join" and turn.speaker:
                conn.execute(
                    "INSERT INTO members (session_id, character_id, joined_seq) VALUES (?, ?, ?)",
                    (session.id, turn.speaker, _next_seq(conn, session.id)),
                )
            seq = _insert_turn(conn, session, turn, _active(conn, session.id), request_id)
            if turn.kind == "leave" and turn.speaker:
                conn.execute(
                    "UPDATE members SET left_seq = ? WHERE session_id = ? AND character_id = ? "
                    "AND left_seq IS NULL",
                    (seq, session.id, turn.speaker),
                )
            seqs.append(seq)
        if relationship is not None:
            character_id, state = relationship
            conn.execute(
                "INSERT INTO relationships (character_id, player_id, trust, respect, familiarity, "
                "turns, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(character_id, player_id) DO UPDATE SET trust = excluded.trust, "
                "respect = excluded.respect, familiarity = excluded.familiarity, "
                "turns = excluded.turns, updated_at = excluded.updated_at",
                (
                    character_id,
                    session.player_id,
                    state.trust,
                    state.respect,
                    state.familiarity,
                    state.turns,
                    time.time(),
                ),
            )
    return seqs


def cut_turn(
    db: Store, session_id: str, seq: int, heard: str, packet: dict[str, Any], memory: str | None
) -> None:
    """A stored character turn the player cut into: it keeps what the player heard, and so
    does every witness's memory of it."""
    with db.transaction(lock=session_lock(session_id)) as conn:
        conn.execute(
            "UPDATE turns SET text = ?, packet = ? WHERE session_id = ? AND seq = ?",
            (heard, json.dumps(packet, ensure_ascii=False), session_id, seq),
        )
        if memory:
            conn.execute(
                "UPDATE memories SET text = ? WHERE session_id = ? AND seq = ? AND kind = 'turn'",
                (memory, session_id, seq),
            )
        else:
            conn.execute(
                "DELETE FROM memories WHERE session_id = ? AND seq = ? AND kind = 'turn'",
                (session_id, seq),
            )


def delete_session(db: Store, session_id: str) -> bool:
    """Remove a session with its lines (transcripts included), members and what its
    characters remembered of it; relationships, built over all sessions, stay."""
    with db.transaction() as conn:
        conn.execute(
            "DELETE FROM witnesses WHERE turn_id IN (SELECT id FROM turns WHERE session_id = ?)",
            (session_id,),
        )
        for table in ("turns", "members", "summaries", "memories"):
            conn.execute(f"DELETE FROM {table} WHERE session_id = ?", (session_id,))
        cur = conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
    if cur.rowcount:
        purge_deleted(db)
    return bool(cur.rowcount)


def purge_deleted(db: Store) -> None:
    """After deleting a player's lines: the full-text index keeps deleted terms in old
    segments until they merge, and the WAL keeps old pages until it is checkpointed.
    (PostgreSQL hides deleted rows at once and reclaims their space by its autovacuum;
    an operator who must erase the bytes runs ``VACUUM FULL``: docs/deploy.md.)"""
    if db.dialect != "sqlite":
        return
    db.execute("INSERT INTO memories(memories) VALUES ('optimize')")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _turn(row: tuple[Any, ...]) -> TurnRow:
    seq, kind, speaker, addressed, text, packet, created_at = row
    return TurnRow(
        seq,
        kind,
        speaker,
        addressed,
        text,
        None if packet is None else json.loads(packet),
        created_at,
    )


_TURN_COLUMNS = "t.seq, t.kind, t.speaker, t.addressed, t.text, t.packet, t.created_at"


def session_turns(db: Store, session_id: str, *, after: int = 0) -> list[TurnRow]:
    rows = db.execute(
        f"SELECT {_TURN_COLUMNS} FROM turns t WHERE t.session_id = ? AND t.seq > ? ORDER BY t.seq",
        (session_id, after),
    )
    return [_turn(r) for r in rows]


def witnessed(db: Store, session_id: str, character_id: str, *, after: int = 0) -> list[TurnRow]:
    """The session's turns ``character_id`` was present for, oldest first."""
    rows = db.execute(
        f"SELECT {_TURN_COLUMNS} FROM turns t JOIN witnesses w ON w.turn_id = t.id "
        "WHERE t.session_id = ? AND w.character_id = ? AND t.seq > ? ORDER BY t.seq",
        (session_id, character_id, after),
    )
    return [_turn(r) for r in rows]


def last_spoke(db: Store, session_id: str) -> dict[str, int]:
    """Each character's latest speaking turn in the session."""
    rows = db.execute(
        "SELECT speaker, MAX(seq) FROM turns WHERE session_id = ? AND kind = 'character' "
        "GROUP BY speaker",
        (session_id,),
    )
    return {r[0]: int(r[1]) for r in rows}


# -- relationships, summaries, memories -------------------------------------------


def get_relationship(db: Store, character_id: str, player_id: str) -> RelationshipState:
    rows = db.execute(
        "SELECT trust, respect, familiarity, turns FROM relationships "
        "WHERE character_id = ? AND player_id = ?",
        (character_id, player_id),
    )
    return RelationshipState(*rows[0]) if rows else RelationshipState()


def latest_summary(db: Store, session_id: str, character_id: str) -> tuple[int, str] | None:
    rows = db.execute(
        "SELECT upto_seq, text FROM summaries WHERE session_id = ? AND character_id = ? "
        "ORDER BY upto_seq DESC LIMIT 1",
        (session_id, character_id),
    )
    return (int(rows[0][0]), str(rows[0][1])) if rows else None


def add_summary(
    db: Store, session: SessionRow, character_id: str, upto_seq: int, text: str
) -> None:
    with db.transaction() as conn:
        conn.execute(
            "INSERT INTO summaries (session_id, character_id, upto_seq, text, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (session.id, character_id, upto_seq, text, time.time()),
        )
        conn.execute(
            "INSERT INTO memories (text, character_id, player_id, session_id, seq, kind) "
            "VALUES (?, ?, ?, ?, ?, 'summary')",
            (text, character_id, session.player_id, session.id, upto_seq),
        )


_WORD = re.compile(r"\w{3,}", re.UNICODE)
STOPWORDS = frozenset(
    [
        "the",
        "and",
        "you",
        "your",
        "are",
        "was",
        "were",
        "what",
        "who",
        "whom",
        "this",
        "that",
        "with",
        "have",
        "has",
        "had",
        "for",
        "not",
        "but",
        "from",
        "they",
        "them",
        "their",
        "there",
        "then",
        "than",
        "when",
        "where",
        "why",
        "how",
        "can",
        "could",
        "would",
        "should",
        "will",
        "about",
        "into",
        "out",
        "our",
        "ours",
        "yours",
        "his",
        "her",
        "hers",
        "its",
        "it's",
        "i'm",
        "did",
        "does",
        "done",
        "just",
        "like",
        "know",
        "tell",
        "said",
        "say",
        "said",
        "remember",
        "recall",
        "please",
        "yes",
        "yeah",
        "okay",
    ]
)


def fts_query(text: str, limit: int = 12) -> str | None:
    """A query matching any of the text's content words (quoted: no syntax leaks in), in
    the syntax FTS5 and PostgreSQL's ``websearch_to_tsquery`` both read."""
    words: list[str] = []
    for w in _WORD.findall(text.lower()):
        if w not in STOPWORDS and w not in words:
            words.append(w)
    if not words:
        return None
    return " OR ".join(f'"{w}"' for w in words[:limit])


# A full-text search of one character's memories with one player, best first.
_SEARCH = {
    "sqlite": "SELECT text, session_id, seq FROM memories WHERE memories MATCH ? "
    "AND character_id = ? AND player_id = ? ORDER BY bm25(memories) LIMIT ?",
    "postgres": "SELECT text, session_id, seq FROM memories, "
    "websearch_to_tsquery('english', ?) AS q WHERE terms @@ q "
    "AND character_id = ? AND player_id = ? ORDER BY ts_rank(terms, q) DESC, rowid DESC LIMIT ?",
}

Memory = tuple[str, str, int]  # a memory's text, session and turn
RRF_K = 60  # reciprocal rank fusion's constant (as the knowledge bases use)


def memories_of(db: Store, character_id: str, player_id: str, limit: int) -> list[Memory]:
    """The newest ``limit`` memories of ``character_id`` with ``player_id`` (for a search by
    meaning, which ranks them all)."""
    rows = db.execute(
        "SELECT text, session_id, seq FROM memories WHERE character_id = ? AND player_id = ? "
        "ORDER BY rowid DESC LIMIT ?",
        (character_id, player_id, limit),
    )
    return [(str(t), str(s), int(q)) for t, s, q in rows]


def fuse(*ranked: Sequence[Memory]) -> list[Memory]:
    """Several rankings as one, by reciprocal rank fusion (a memory high in either wins)."""
    scores: dict[Memory, float] = {}
    for ranking in ranked:
        for place, memory in enumerate(ranking, 1):
            scores[memory] = scores.get(memory, 0.0) + 1.0 / (RRF_K + place)
    return sorted(scores, key=lambda m: scores[m], reverse=True)


def recall(
    db: Store,
    character_id: str,
    player_id: str,
    query_text: str,
    *,
    exclude_session: str | None = None,
    exclude_after: int = 0,
    limit: int = 3,
    by_meaning: Sequence[Memory] = (),
) -> list[str]:
    """Memories of ``character_id`` with ``player_id`` that match the text, best first:
    by full-text search, fused with ``by_meaning`` (the same memories ranked by their
    embeddings' likeness to the text) when given.

    Turns of ``exclude_session`` after ``exclude_after`` (already in the prompt)
    are left out.
    """
    query = fts_query(query_text)
    keyword: list[Memory] = []
    if query is not None:
        rows = db.execute(_SEARCH[db.dialect], (query, character_id, player_id, limit * 4 + 8))
        keyword = [(str(t), str(s), int(q)) for t, s, q in rows]
    out: list[str] = []
    for text, session_id, seq in fuse(keyword, by_meaning) if by_meaning else keyword:
        if session_id == exclude_session and int(seq) > exclude_after:
            continue
        if text not in out:
            out.append(text)
        if len(out) >= limit:
            break
    return out
