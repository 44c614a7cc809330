"""API keys: created once, stored as a SHA-256 hash, revoked but never deleted.

A key is ``ocak-`` and 43 random URL-safe characters (256 bits): a fast hash is
the right store for a secret that cannot be guessed (a slow password hash only
helps low-entropy secrets). The database and the process keep only the hash
and a short display prefix; the key itself is shown once, by ``create_key``.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass

from ocak.errors import InvalidRequest, NotFound
from ocak.store.db import ConstraintViolation, Store

KEY_PREFIX = "ocak-"
DISPLAY_CHARS = 12
LOCALITIES = ("local",)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What ocak knows about a key (never the key itself)."""

    id: int
    name: str
    prefix: str
    models: tuple[str, ...] | None = None
    locality: str | None = None
    rpm: int | None = None
    tpm: int | None = None
    budget_tokens: int | None = None
    budget_period: float | None = None
    created_at: float = 0.0
    revoked_at: float | None = None
    admin: bool = False  # may call the routes that change the machine or its configuration

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def allows(self, model: str) -> bool:
        return self.models is None or model in self.models


@dataclass(frozen=True, slots=True)
class StoredKey:
    info: KeyInfo
    hash: bytes


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


_COLUMNS = (
    "id, name, prefix, models, locality, rpm, tpm, budget_tokens, budget_period, "
    "created_at, revoked_at, hash, admin"
)


def _row(row: tuple[object, ...]) -> StoredKey:
    (id_, name, prefix, models, locality, rpm, tpm, budget, period, created, revoked) = row[:11]
    digest, adm = row[11:]
    info = KeyInfo(
        id=int(id_),  # type: ignore[call-overload]
        name=str(name),
        prefix=str(prefix),
        models=tuple(json.loads(str(models))) if models is not None else None,
        locality=None if locality is None else str(locality),
        rpm=None if rpm is None else int(rpm),  # type: ignore[call-overload]
        tpm=None if tpm is None else int(tpm),  # type: ignore[call-overload]
        budget_tokens=None if budget is None else int(budget),  # type: ignore[call-overload]
        budget_period=None if period is None else float(period),  # type: ignore[arg-type]
        created_at=float(created),  # type: ignore[arg-type]
        revoked_at=None if revoked is None else float(revoked),  # type: ignore[arg-type]
        admin=bool(adm),
    )
    return StoredKey(info, bytes.fromhex(str(digest)))


def _positive(name: str, value: int | float | None) -> None:
    if value is not None and value <= 0:
        raise InvalidRequest(f"{name} must be positive", param=name)


def create_key(
    db: Store,
    name: str,
    *,
    models: list[str] | None = None,
    locality: str | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    budget_tokens: int | None = None,
    budget_period: float | None = None,
    admin: bool = False,
) -> tuple[str, KeyInfo]:
    """Create a key; returns the key (its only appearance) and its record."""
    name = name.strip()
    if not name or len(name) > 100:
        raise InvalidRequest("a key needs a name of 1 to 100 characters", param="name")
    if locality is not None and locality not in LOCALITIES:
        raise InvalidRequest(f"locality must be one of {', '.join(LOCALITIES)}", param="locality")
    for field, value in (
        ("rpm", rpm),
        ("tpm", tpm),
        ("budget_tokens", budget_tokens),
        ("budget_period", budget_period),
    ):
        _positive(field, value)
    if budget_period is not None and budget_tokens is None:
        raise InvalidRequest("a budget period needs a token budget", param="budget_period")
    cleaned = sorted({m.strip() for m in models or [] if m.strip()}) or None
    key = new_key()
    created = time.time()
    try:
        key_id = db.insert(
            "INSERT INTO keys (name, prefix, hash, models, locality, rpm, tpm, budget_tokens,"
            " budget_period, created_at, admin) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                name,
                key[:DISPLAY_CHARS],
                hash_key(key).hex(),
                None if cleaned is None else json.dumps(cleaned),
                locality,
                rpm,
                tpm,
                budget_tokens,
                budget_period,
                created,
                int(admin),
            ),
        )
    except ConstraintViolation as exc:
        raise InvalidRequest(
            f"an active key named '{name}' already exists (revoke it or pick another name)",
            param="name",
        ) from exc
    info = KeyInfo(
        id=key_id,
        name=name,
        prefix=key[:DISPLAY_CHARS],
        models=None if cleaned is None else tuple(cleaned),
        locality=locality,
        rpm=rpm,
        tpm=tpm,
        budget_tokens=budget_tokens,
        budget_period=budget_period,
        created_at=created,
        admin=admin,
    )
    return key, info


def list_keys(db: Store, *, include_revoked: bool = True) -> list[KeyInfo]:
    return [k.info for k in stored_keys(db, include_revoked=include_revoked)]


def stored_keys(db: Store, *, include_revoked: bool = False) -> list[StoredKey]:
    where = "" if include_revoked else " WHERE revoked_at IS NULL"
    rows = db.execute(f"SELECT {_COLUMNS} FROM keys{where} ORDER BY id")
    return [_row(r) for r in rows]


def revoke_key(db: Store, name_or_prefix: str) -> KeyInfo:
    """Revoke the active key with this name (or display prefix); the row stays for usage."""
    with db.transaction() as conn:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM keys WHERE revoked_at IS NULL AND (name = ? OR prefix = ?)",
            (name_or_prefix, name_or_prefix),
        ).fetchall()
        if not rows:
            raise NotFound(f"no active key named '{name_or_prefix}'")
        if len(rows) > 1:
            raise InvalidRequest(f"'{name_or_prefix}' matches several keys; use the name")
        stored = _row(rows[0])
        now = time.time()
        conn.execute("UPDATE keys SET revoked_at = ? WHERE id = ?", (now, stored.info.id))
    info = stored.info
    return KeyInfo(**{**{f: getattr(info, f) for f in info.__slots__}, "revoked_at": now})
