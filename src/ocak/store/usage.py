"""Usage records: one row per model request, and the summaries read from them."""

from __future__ import annotations

from dataclasses import dataclass, fields

from ocak.store.db import Store

# Limits what a client can make ocak store: a model name is client input.
MAX_TEXT = 200


@dataclass(slots=True)
class UsageRow:
    """One request as stored (the fields issue 6 asks for, and the HTTP outcome)."""

    ts: float
    request_id: str
    key_id: int | None
    key_name: str | None
    model: str | None
    backend: str | None
    locality: str | None
    stream: bool
    prompt_tokens: int
    completion_tokens: int
    ttft_ms: float | None
    total_ms: float
    status: str
    http_status: int | None = None
    error_code: str | None = None
    finish_reason: str | None = None
    prompt: str | None = None  # the registry prompt version it was rendered from


def _clip(value: str | None) -> str | None:
    """At most ``MAX_TEXT`` characters, and valid UTF-8 whatever the client sent."""
    if value is None:
        return None
    return value[:MAX_TEXT].encode("utf-8", "backslashreplace").decode("utf-8")


_INSERT = (
    "INSERT INTO usage (ts, request_id, key_id, key_name, model, backend, locality, stream,"
    " prompt_tokens, completion_tokens, ttft_ms, total_ms, status, http_status, error_code,"
    " finish_reason, prompt) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def insert_usage(db: Store, row: UsageRow) -> int:
    """Commit one record (autocommit: durable against a killed process when this returns);
    its row id, which stored content is keyed by."""
    return db.insert(
        _INSERT,
        (
            row.ts,
            _clip(row.request_id),
            row.key_id,
            _clip(row.key_name),
            _clip(row.model),
            _clip(row.backend),
            _clip(row.locality),
            int(row.stream),
            row.prompt_tokens,
            row.completion_tokens,
            row.ttft_ms,
            row.total_ms,
            row.status,
            row.http_status,
            _clip(row.error_code),
            _clip(row.finish_reason),
            _clip(row.prompt),
        ),
    )


def recent_usage(db: Store, limit: int = 100) -> list[UsageRow]:
    rows = db.execute(
        "SELECT ts, request_id, key_id, key_name, model, backend, locality, stream,"
        " prompt_tokens, completion_tokens, ttft_ms, total_ms, status, http_status, error_code,"
        " finish_reason, prompt FROM usage ORDER BY id DESC LIMIT ?",
        (limit,),
    )
    names = [f.name for f in fields(UsageRow)]  # the SELECT above lists them in this order
    return [UsageRow(**{**dict(zip(names, r, strict=True)), "stream": bool(r[7])}) for r in rows]


def tokens_used(db: Store, key_id: int, since: float | None = None) -> int:
    """Prompt plus completion tokens a key has used (since a time, when given)."""
    rows = db.execute(
        "SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM usage"
        " WHERE key_id = ? AND ts >= ?",
        (key_id, since if since is not None else float("-inf")),
    )
    return int(rows[0][0])


GROUPS = {
    "key": "COALESCE(key_name, '(no key)')",
    "model": "model",
    "backend": "backend",
    "prompt": "COALESCE(prompt, '(no prompt)')",  # the registry prompt version, id@version
}


@dataclass(slots=True)
class UsageSummary:
    group: str
    requests: int
    completed: int
    failed: int
    cancelled: int
    rejected: int
    prompt_tokens: int
    completion_tokens: int
    avg_ttft_ms: float | None
    avg_total_ms: float | None


def _count(status: str) -> str:
    """How many rows have ``status`` (a constant of this module: never client text)."""
    return f"SUM(CASE WHEN status = '{status}' THEN 1 ELSE 0 END)"


def summarize(db: Store, *, by: str = "model", since: float | None = None) -> list[UsageSummary]:
    """Requests and tokens per key, model or backend since a time (default: all)."""
    column = GROUPS[by]  # a fixed whitelist: never client text in SQL
    rows = db.execute(
        f"SELECT COALESCE({column}, '-') AS g, COUNT(*),"
        f" {_count('completed')}, {_count('failed')}, {_count('cancelled')},"
        f" {_count('rejected')}, SUM(prompt_tokens), SUM(completion_tokens),"
        " AVG(CASE WHEN status = 'completed' THEN ttft_ms END),"
        " AVG(CASE WHEN status = 'completed' THEN total_ms END)"
        " FROM usage WHERE ts >= ? GROUP BY g ORDER BY COUNT(*) DESC, g",
        (since if since is not None else float("-inf"),),
    )
    return [
        UsageSummary(
            group=str(r[0]),
            requests=int(r[1]),
            completed=int(r[2] or 0),
            failed=int(r[3] or 0),
            cancelled=int(r[4] or 0),
            rejected=int(r[5] or 0),
            prompt_tokens=int(r[6] or 0),
            completion_tokens=int(r[7] or 0),
            avg_ttft_ms=r[8],
            avg_total_ms=r[9],
        )
        for r in rows
    ]


def count_by_status(db: Store, since: float | None = None) -> dict[str, int]:
    rows = db.execute(
        "SELECT status, COUNT(*) FROM usage WHERE ts >= ? GROUP BY status",
        (since if since is not None else float("-inf"),),
    )
    return {str(s): int(n) for s, n in rows}


@dataclass(slots=True)
class UsagePoint:
    """One time bucket of one group: what the console's charts draw."""

    start: float  # the bucket's start, seconds since the epoch
    group: str
    requests: int
    failed: int
    prompt_tokens: int
    completion_tokens: int
    avg_total_ms: float | None


def series(db: Store, *, by: str = "model", since: float, bucket: float) -> list[UsagePoint]:
    """Requests, tokens and latency per ``bucket`` seconds and per key, model or backend,
    since ``since``, oldest first (buckets without a request are absent)."""
    column = GROUPS[by]  # a fixed whitelist: never client text in SQL
    # The bucket's index: SQLite's CAST truncates (ts >= since: the floor); PostgreSQL's rounds.
    floor = "CAST((ts - ?) / ? AS INTEGER)"
    if db.dialect == "postgres":
        floor = "CAST(FLOOR((ts - ?) / ?) AS INTEGER)"
    rows = db.execute(
        f"SELECT {floor} AS b, COALESCE({column}, '-') AS g, COUNT(*),"
        " SUM(CASE WHEN status IN ('failed', 'rejected') THEN 1 ELSE 0 END),"
        " SUM(prompt_tokens), SUM(completion_tokens),"
        " AVG(CASE WHEN status = 'completed' THEN total_ms END)"
        " FROM usage WHERE ts >= ? GROUP BY b, g ORDER BY b, g",
        (since, bucket, since),
    )
    return [
        UsagePoint(
            since + int(r[0]) * bucket,
            str(r[1]),
            int(r[2]),
            int(r[3] or 0),
            int(r[4] or 0),
            int(r[5] or 0),
            r[6],
        )
        for r in rows
    ]
