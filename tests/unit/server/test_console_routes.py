"""The console's server side, in process: its files with their security headers, the
root that is Ollama's probe for tools and the console for browsers, the usage report
its charts draw, and the card check its editor calls as the author types."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from app_helpers import run_app as run
from ocak.store.db import Store, open_database
from ocak.store.keys import create_key
from ocak.store.usage import UsageRow, insert_usage, series

CHAT = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}


def test_the_files_carry_a_strict_policy_and_the_root_serves_browsers(tmp_path: Path) -> None:
    async def check(c: httpx.AsyncClient) -> None:
        for path, kind in (("/console/app.js", "javascript"), ("/console/app.css", "css"),
                           ("/console/", "html")):  # fmt: skip
            r = await c.get(path)
            assert r.status_code == 200 and kind in r.headers["content-type"], path
            csp = r.headers["content-security-policy"]
            assert "default-src 'none'" in csp and "script-src 'self'" in csp
            assert r.headers["x-frame-options"] == "DENY"
        assert (await c.get("/console/../auth.py")).status_code == 404
        assert (await c.get("/console/secrets.txt")).status_code == 404
        # A tool probing the root gets Ollama's answer; a browser gets the console.
        assert (await c.get("/")).text == "Ollama is running"
        page = await c.get("/", headers={"Accept": "text/html,application/xhtml+xml"})
        assert "<title>ocak console</title>" in page.text
        assert "content-security-policy" in page.headers

    run(tmp_path, check)


def test_with_keys_the_page_loads_but_nothing_is_read_without_one(tmp_path: Path) -> None:
    db = open_database(tmp_path / "ocak.db")
    admin, _ = create_key(db, "owner", admin=True)
    db.close()

    async def check(c: httpx.AsyncClient) -> None:
        assert (await c.get("/", headers={"Accept": "text/html"})).status_code == 200
        assert (await c.get("/console/app.js")).status_code == 200
        assert (await c.get("/v1/usage")).status_code == 401
        assert (await c.get("/v1/characters")).status_code == 401
        ok = await c.get("/v1/usage", headers={"Authorization": f"Bearer {admin}"})
        assert ok.status_code == 200, ok.text

    run(tmp_path, check)


def test_the_usage_report_buckets_requests_by_group(tmp_path: Path) -> None:
    async def check(c: httpx.AsyncClient) -> None:
        for _ in range(3):
            assert (await c.post("/v1/chat/completions", json=CHAT)).status_code == 200
        report = (await c.get("/v1/usage", params={"by": "model", "hours": 1})).json()
        assert report["bucket"] == 3600 / 48 and report["by"] == "model"
        (summary,) = report["summary"]
        assert summary["group"] == "default" and summary["requests"] == 3
        assert sum(p["requests"] for p in report["series"]) == 3
        assert all(report["since"] <= p["start"] <= time.time() for p in report["series"])
        bad = await c.get("/v1/usage", params={"by": "player"})
        assert bad.status_code == 400 and "by" in bad.json()["error"]["message"]
        assert (await c.get("/v1/usage", params={"hours": 0})).status_code == 400

    run(tmp_path, check)


def test_series_puts_each_request_in_its_bucket(store: Store) -> None:
    db = store
    base = 1_000_000.0

    def row(ts: float, model: str, status: str = "completed") -> UsageRow:
        return UsageRow(ts, "r", None, None, model, "llama.cpp", "local", False, 3, 4, 1.0,
                        10.0, status)  # fmt: skip

    for ts, model, status in (
        (base + 1, "a", "completed"),
        (base + 59, "a", "failed"),
        (base + 61, "a", "completed"),
        (base + 61, "b", "completed"),
    ):
        insert_usage(db, row(ts, model, status))  # fmt: skip
    points = series(db, by="model", since=base, bucket=60)
    got = [(p.start - base, p.group, p.requests, p.failed, p.completion_tokens) for p in points]
    assert got == [(0, "a", 2, 1, 8), (60, "a", 1, 0, 4), (60, "b", 1, 0, 4)]


def test_the_card_check_names_each_problem_and_stores_nothing(tmp_path: Path) -> None:
    async def check(c: httpx.AsyncClient) -> None:
        good = {"id": "mara", "name": "Mara", "persona": "Keeps the lighthouse."}
        r = await c.post("/v1/characters/validate", json=good)
        assert r.json() == {"valid": True, "errors": []}
        r = await c.post("/v1/characters/validate", json={**good, "name": 42, "mood": "x"})
        result = r.json()
        assert r.status_code == 200 and result["valid"] is False
        assert {e["loc"] for e in result["errors"]} >= {"name"}, result
        r = await c.post("/v1/characters/validate", content=b"{not json",
                         headers={"Content-Type": "application/json"})  # fmt: skip
        assert r.json()["valid"] is False and "not JSON" in r.json()["errors"][0]["msg"]
        assert (await c.get("/v1/characters")).json()["data"] == []

    run(tmp_path, check)
