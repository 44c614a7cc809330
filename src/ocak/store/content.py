"""Stored content (``store_content``): chat requests and their answers beside usage rows.

One ``usage_content`` row per completed chat request, keyed by its usage row: the messages
the model saw, the parameters worth keeping (tools, response format, sampling), and the
answer in OpenAI's assistant-message shape. Everything is redacted before it is written
(``redact``), so the file never holds a key; rows older than the retention period are
deleted (``purge_content``) with ``secure_delete``, so their text leaves the file's pages.
``chat_line`` turns a row into a line of OpenAI's fine-tuning chat format, which eval
suites read as cases.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ocak.store.db import Store
from ocak.store.keys import KEY_PREFIX

REDACTED = "[REDACTED]"
Scrub = Callable[[str], str]

# Key shapes, each alone (not inside a longer word): ocak's own, OpenAI's and Anthropic's
# (sk-...), Groq's, Hugging Face's, Replicate's, xAI's, Google's, GitHub's, AWS access key
# ids, Slack's, JSON web tokens and PEM private keys.
_KEYS = re.compile(
    r"(?<![A-Za-z0-9_-])(?:" + re.escape(KEY_PREFIX) + r"[A-Za-z0-9_-]{16,}"
    r"|sk-[A-Za-z0-9_-]{16,}"
    r"|gsk_[A-Za-z0-9]{16,}"
    r"|hf_[A-Za-z0-9]{16,}"
    r"|r8_[A-Za-z0-9]{16,}"
    r"|xai-[A-Za-z0-9]{16,}"
    r"|AIza[0-9A-Za-z_-]{30,}"
    r"|gh[pousr]_[A-Za-z0-9]{20,}"
    r"|github_pat_[A-Za-z0-9_]{20,}"
    r"|AKIA[0-9A-Z]{16}"
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
    r")"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
    re.DOTALL,
)
# "Bearer <token>" (a token has a digit: "bearer bonds" stays) and "api_key = <value>".
_BEARER = re.compile(r"(?i)\b(bearer\s+)(?=[A-Za-z0-9._~+/=-]*\d)[A-Za-z0-9._~+/=-]{8,}")
_ASSIGNED = re.compile(
    r"(?i)\b((?:api[_-]?key|secret[_-]?key|client[_-]?secret|access[_-]?token|password|passwd)"
    r"[\"']?\s*[:=]\s*[\"']?)[^\s\"',;]{8,}"
)


def redact(text: str, scrub: Scrub | None = None) -> str:
    """``text`` with anything key-like replaced by ``[REDACTED]``; ``scrub`` first replaces
    the exact values of the keys this process holds (the providers' keys)."""
    if scrub is not None:
        text = scrub(text)
    text = _KEYS.sub(REDACTED, text)
    text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
    return _ASSIGNED.sub(lambda m: m.group(1) + REDACTED, text)


def redact_json(value: Any, scrub: Scrub | None = None) -> Any:
    """Every string in a JSON value (object keys too) redacted."""
    if isinstance(value, str):
        return redact(value, scrub)
    if isinstance(value, list):
        return [redact_json(v, scrub) for v in value]
    if isinstance(value, dict):
        return {redact(str(k), scrub): redact_json(v, scrub) for k, v in value.items()}
    return value


@dataclass(slots=True)
class Content:
    """What is stored of one request: messages, kept parameters, and the answer
    (``{"message": {...assistant...}, "finish_reason": ...}``)."""

    messages: list[dict[str, Any]]
    params: dict[str, Any]
    answer: dict[str, Any]


def _json(value: Any) -> str:
    # ensure_ascii: lone surrogates a client sent become escapes, not a failed write
    return json.dumps(value, separators=(",", ":"), default=str)


def insert_content(
    db: Store, usage_id: int, ts: float, content: Content, scrub: Scrub | None = None
) -> None:
    """Store ``content`` beside usage row ``usage_id``, redacted."""
    db.execute(
        "INSERT INTO usage_content (usage_id, ts, messages, params, answer) VALUES (?,?,?,?,?)",
        (
            usage_id,
            ts,
            _json(redact_json(content.messages, scrub)),
            _json(redact_json(content.params, scrub)),
            _json(redact_json(content.answer, scrub)),
        ),
    )


def purge_content(db: Store, before: float | None = None) -> int:
    """Delete content stored before ``before`` (None: all of it); how many rows went.
    Usage rows stay: they are the accounting, and hold no content."""
    if db.dialect == "sqlite":  # deleted text is overwritten, not left in free pages
        db.execute("PRAGMA secure_delete = ON")
    with db.transaction() as conn:
        cur = conn.execute(
            "DELETE FROM usage_content WHERE ts < ?",
            (float("inf") if before is None else before,),
        )
        return int(cur.rowcount)


def content_count(db: Store) -> int:
    return int(db.execute("SELECT COUNT(*) FROM usage_content")[0][0])


@dataclass(slots=True)
class StoredExchange:
    """A stored request with what its usage row says about it (never its key)."""

    usage_id: int
    ts: float
    request_id: str
    model: str | None
    backend: str | None
    prompt: str | None
    stream: bool
    content: Content


def stored_content(
    db: Store, *, since: float | None = None, model: str | None = None, batch: int = 200
) -> Iterator[StoredExchange]:
    """Stored requests since a time (oldest first), of one model when given; read in
    batches, so an export of any size holds one batch in memory."""
    last = 0
    one_model = " AND u.model = ?" if model is not None else ""
    while True:
        params: tuple[Any, ...] = (last, float("-inf") if since is None else since)
        rows = db.execute(
            "SELECT c.usage_id, c.ts, u.request_id, u.model, u.backend, u.prompt, u.stream,"
            " c.messages, c.params, c.answer FROM usage_content c"
            " JOIN usage u ON u.id = c.usage_id"
            f" WHERE c.usage_id > ? AND c.ts >= ?{one_model}"
            " ORDER BY c.usage_id LIMIT ?",
            (*params, *((model,) if model is not None else ()), batch),
        )
        for r in rows:
            yield StoredExchange(
                usage_id=int(r[0]),
                ts=float(r[1]),
                request_id=str(r[2]),
                model=r[3],
                backend=r[4],
                prompt=r[5],
                stream=bool(r[6]),
                content=Content(json.loads(r[7]), json.loads(r[8]), json.loads(r[9])),
            )
        if len(rows) < batch:
            return
        last = int(rows[-1][0])


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


# Request fields of OpenAI's fine-tuning chat format, beside ``messages``.
TOP_LEVEL = ("tools", "parallel_tool_calls")


def chat_line(x: StoredExchange, *, metadata: bool = True) -> dict[str, Any]:
    """One line of chat-format JSONL: the request's messages then the answer (the
    reference an eval grades against, the target a fine-tune learns), ``tools`` as the
    request gave them, and a ``metadata`` object consumers ignore."""
    params = dict(x.content.params)
    line: dict[str, Any] = {"messages": [*x.content.messages, x.content.answer["message"]]}
    for name in TOP_LEVEL:
        if params.get(name) is not None:
            line[name] = params.pop(name)
    if metadata:
        meta: dict[str, Any] = {
            "request_id": redact(x.request_id),  # a client may choose its request id
            "model": x.model,
            "backend": x.backend,
            "ts": _iso(x.ts),
            "prompt": x.prompt,
            "finish_reason": x.content.answer.get("finish_reason"),
            "stream": x.stream,
        }
        variables = params.pop("prompt_variables", None)
        if variables is not None:
            meta["variables"] = variables
        params.pop("model", None)  # the row's model says it
        if params:
            meta["params"] = params
        line["metadata"] = meta
    return line
