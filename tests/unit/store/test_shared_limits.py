"""Per-key limits counted in a real PostgreSQL for every process that shares it: two
limiters on two connections (two ocak processes) admit a key's rpm between them, its tpm
across both, its budget from the usage rows both write; a minute later, room again."""

from __future__ import annotations

import time

import pytest

from ocak.errors import QuotaExceeded, RateLimited
from ocak.server.limits import SharedLimiter
from ocak.store.keys import create_key, list_keys
from ocak.store.postgres import open_postgres
from ocak.store.usage import UsageRow, insert_usage
from pg import PgServer


class Clock:
    def __init__(self) -> None:
        self.now = time.time() + 1  # after the keys' creation (budget windows start there)

    def __call__(self) -> float:
        return self.now


def test_limits_hold_across_two_processes(pg_server: PgServer) -> None:
    url = pg_server.database()
    one, two = open_postgres(url), open_postgres(url)
    clock = Clock()
    a, b = SharedLimiter(one, wall=clock), SharedLimiter(two, wall=clock)
    _, rpm = create_key(one, "game", rpm=3)
    _, tpm = create_key(one, "bot", tpm=100)
    _, budget = create_key(one, "trial", budget_tokens=50)
    try:
        a.admit(rpm)
        clock.now += 1
        a.admit(rpm)
        b.admit(rpm)
        with pytest.raises(RateLimited) as refused:
            b.admit(rpm)
        assert "across all ocak processes" in refused.value.message
        assert refused.value.retry_after == pytest.approx(59.0 - 1.0 + 1.0, abs=0.01)
        with pytest.raises(RateLimited):
            a.admit(rpm)  # the other process is full too
        clock.now += 61
        a.admit(rpm)  # a minute later, the window has room again

        b.admit(tpm)
        b.charge(tpm, 100)  # its request used 100 tokens, on B
        with pytest.raises(RateLimited) as over:
            a.admit(tpm)
        assert "100 tokens per minute" in over.value.message

        a.admit(budget)
        row = UsageRow(clock.now, "r", budget.id, "trial", "default", "local", "local", False,
                       30, 25, 1.0, 2.0, "completed")  # fmt: skip
        insert_usage(two, row)  # B wrote the finished request's usage
        with pytest.raises(QuotaExceeded):
            a.admit(budget)
    finally:
        one.close()
        two.close()


def test_an_older_postgres_schema_upgrades_and_a_newer_one_is_refused(pg_server: PgServer) -> None:
    from ocak.store.db import SCHEMA_VERSION, StoreError
    from ocak.store.postgres import PG_MIGRATIONS

    url = pg_server.database()
    old = open_postgres(url, migrations=PG_MIGRATIONS[:3])
    assert old.schema_version() == 3
    create_key(old, "legacy")
    old.close()
    db = open_postgres(url)
    assert db.schema_version() == SCHEMA_VERSION == len(PG_MIGRATIONS)
    assert [k.name for k in list_keys(db)] == ["legacy"]  # kept through the upgrade
    db.execute("UPDATE ocak_schema SET version = 99")
    db.close()
    with pytest.raises(StoreError, match="newer than this ocak"):
        open_postgres(url)
