"""Per-key limits: requests and tokens per minute (sliding windows) and token budgets.

Pure logic with an injectable clock. A request is admitted or refused with
``RateLimited`` carrying ``retry_after`` (the HTTP edge sends ``Retry-After``).
Tokens are charged when a request ends (its usage is known only then), so a
request admitted within a limit may finish over it; the next one waits.

Budgets count prompt plus completion tokens, over the key's whole life or per
period (``budget_period`` seconds, windows aligned to the key's creation).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ocak.errors import QuotaExceeded, RateLimited
from ocak.store.keys import KeyInfo
from ocak.store.postgres import PostgresDatabase
from ocak.store.usage import tokens_used

WINDOW = 60.0
Clock = Callable[[], float]


@dataclass
class _KeyWindow:
    requests: deque[float] = field(default_factory=deque)
    tokens: deque[tuple[float, int]] = field(default_factory=deque)
    token_sum: int = 0
    budget_start: float = 0.0
    budget_used: int = 0

    def expire(self, now: float) -> None:
        edge = now - WINDOW
        while self.requests and self.requests[0] <= edge:
            self.requests.popleft()
        while self.tokens and self.tokens[0][0] <= edge:
            self.token_sum -= self.tokens.popleft()[1]


def budget_window_start(key: KeyInfo, now: float) -> float:
    """Start of the key's current budget window (its creation for lifetime budgets)."""
    if not key.budget_period:
        return key.created_at
    periods = max(0, math.floor((now - key.created_at) / key.budget_period))
    return key.created_at + periods * key.budget_period


def over_rpm(key: KeyInfo, wait: float, shared: bool = False) -> RateLimited:
    """The refusal of a request over the key's requests per minute (``shared``: counted
    across every process of the store)."""
    where = " (across all ocak processes)" if shared else ""
    return RateLimited(
        f"Rate limit reached for key '{key.name}': {key.rpm} requests per minute{where}. "
        f"Try again in {wait:.1f}s.",
        retry_after=wait,
    )


def over_tpm(key: KeyInfo, used: int, wait: float, shared: bool = False) -> RateLimited:
    """The refusal of a request over the key's tokens per minute."""
    where = ", across all ocak processes" if shared else ""
    return RateLimited(
        f"Rate limit reached for key '{key.name}': {key.tpm} tokens per minute "
        f"(used {used}{where}). Try again in {wait:.1f}s.",
        retry_after=wait,
    )


class Limiter:
    """Counts what each key did in the last minute and in its budget window.

    ``clock`` is monotonic (rate windows); ``wall`` is epoch time (budget windows,
    which outlive the process). Thread-safe: gRPC threads and the event loop share it.
    """

    def __init__(self, clock: Clock = time.monotonic, wall: Clock = time.time) -> None:
        self.clock = clock
        self.wall = wall
        self._keys: dict[int, _KeyWindow] = {}
        self._lock = threading.Lock()

    def _window(self, key_id: int) -> _KeyWindow:
        w = self._keys.get(key_id)
        if w is None:
            w = self._keys[key_id] = _KeyWindow()
        return w

    def set_budget_used(self, key: KeyInfo, used: int, window_start: float) -> None:
        """Seed a key's budget from the usage store (at start, and when keys change)."""
        with self._lock:
            w = self._window(key.id)
            w.budget_start, w.budget_used = window_start, used

    def forget(self, keep: set[int]) -> None:
        """Drop counters of keys that no longer exist (revoked)."""
        with self._lock:
            for key_id in [k for k in self._keys if k not in keep]:
                del self._keys[key_id]

    def admit(self, key: KeyInfo) -> None:
        """Count one request against the key, or raise ``RateLimited``."""
        with self._lock:
            now = self.clock()
            w = self._window(key.id)
            w.expire(now)
            if key.budget_tokens is not None:
                self._check_budget(key, w)
            if key.rpm is not None and len(w.requests) >= key.rpm:
                raise over_rpm(key, w.requests[len(w.requests) - key.rpm] + WINDOW - now)
            if key.tpm is not None and w.token_sum >= key.tpm:
                raise over_tpm(key, w.token_sum, self._tpm_wait(key.tpm, w, now))
            if key.rpm is not None:
                w.requests.append(now)

    def _check_budget(self, key: KeyInfo, w: _KeyWindow) -> None:
        assert key.budget_tokens is not None
        wall = self.wall()
        start = budget_window_start(key, wall)
        if start != w.budget_start:  # a new period began
            w.budget_start, w.budget_used = start, 0
        if w.budget_used < key.budget_tokens:
            return
        retry = None if not key.budget_period else start + key.budget_period - wall
        when = "" if retry is None else f" It renews in {retry:.0f}s."
        raise QuotaExceeded(
            f"The key '{key.name}' has used its budget of {key.budget_tokens} tokens "
            f"({w.budget_used} used).{when}",
            retry_after=retry,
        )

    @staticmethod
    def _tpm_wait(tpm: int, w: _KeyWindow, now: float) -> float:
        """Seconds until enough of the last minute's tokens expire to go under ``tpm``."""
        remaining = w.token_sum
        for at, tokens in w.tokens:
            remaining -= tokens
            if remaining < tpm:
                return max(0.0, at + WINDOW - now)
        return WINDOW

    def charge(self, key: KeyInfo, tokens: int) -> None:
        """Add a finished request's tokens to the key's minute window and budget."""
        if tokens <= 0:
            return
        with self._lock:
            w = self._window(key.id)
            if key.tpm is not None:
                w.tokens.append((self.clock(), tokens))
                w.token_sum += tokens
            if key.budget_tokens is not None:
                start = budget_window_start(key, self.wall())
                if start != w.budget_start:
                    w.budget_start, w.budget_used = start, 0
                w.budget_used += tokens


class SharedLimiter(Limiter):
    """The same limits, counted in the store for every process that shares it (PostgreSQL):
    N ocak processes admit a key's ``rpm`` requests a minute between them, not N times it.

    Each admitted request is a row of ``rate_events`` and each finished request's tokens
    another; a key's window is checked and counted in one transaction under an advisory
    lock on the key, so two processes cannot both take the last request of a minute.
    Budgets are read from the usage records, which every process writes. Times are wall
    clock (the processes share no monotonic clock): machines should run NTP.
    """

    PRUNE_EVERY = 200  # admissions between deletions of rows older than the window

    def __init__(self, store: PostgresDatabase, wall: Clock = time.time) -> None:
        super().__init__(clock=wall, wall=wall)
        self.store = store
        self._admitted = 0

    def admit(self, key: KeyInfo) -> None:
        if key.rpm is None and key.tpm is None and key.budget_tokens is None:
            return
        now = self.wall()
        edge = now - WINDOW
        if key.budget_tokens is not None:  # every process writes the usage rows it counts
            start = budget_window_start(key, now)
            used = tokens_used(self.store, key.id, since=start)
            with self._lock:
                w = self._window(key.id)
                w.budget_start, w.budget_used = start, used
                self._check_budget(key, w)
        with self.store.transaction(lock=key.id) as tx:
            if key.rpm is not None:
                rows = tx.execute(
                    "SELECT ts FROM rate_events WHERE key_id = ? AND ts > ? AND tokens = 0"
                    " ORDER BY ts DESC LIMIT ?",
                    (key.id, edge, key.rpm),
                ).fetchall()
                if len(rows) >= key.rpm:
                    raise over_rpm(key, float(rows[-1][0]) + WINDOW - now, shared=True)
            if key.tpm is not None:
                rows = tx.execute(
                    "SELECT ts, tokens FROM rate_events WHERE key_id = ? AND ts > ?"
                    " AND tokens > 0 ORDER BY ts",
                    (key.id, edge),
                ).fetchall()
                w = _KeyWindow()
                w.tokens.extend((float(t), int(n)) for t, n in rows)
                w.token_sum = sum(n for _, n in w.tokens)
                if w.token_sum >= key.tpm:
                    wait = self._tpm_wait(key.tpm, w, now)
                    raise over_tpm(key, w.token_sum, wait, shared=True)
            if key.rpm is not None:
                tx.execute("INSERT INTO rate_events (key_id, ts, tokens) VALUES (?, ?, 0)",
                           (key.id, now))  # fmt: skip
        self._admitted += 1
        if self._admitted % self.PRUNE_EVERY == 0:
            self.store.execute("DELETE FROM rate_events WHERE ts < ?", (edge,))

    def charge(self, key: KeyInfo, tokens: int) -> None:
        if tokens <= 0 or key.tpm is None:
            return  # budgets are counted from the usage rows
        self.store.execute(
            "INSERT INTO rate_events (key_id, ts, tokens) VALUES (?, ?, ?)",
            (key.id, self.wall(), tokens),
        )
