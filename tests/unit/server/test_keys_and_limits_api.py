"""Keys, limits, usage rows, metrics, log lines and input caps through the HTTP app.

In-process (httpx's ASGI transport) on the scripted fake engine and a real SQLite
file, so each rule is checked fast; tests/test_keys_server.py checks the same on a
real ``ocak serve`` with the default model.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ocak.config import ConfigError, Settings
from ocak.engines.fake import FakeEngine
from ocak.engines.registry import EngineRegistry
from ocak.errors import AuthenticationError, PermissionDenied, RateLimited
from ocak.server.app import create_app
from ocak.server.auth import Authenticator, bearer_token, check_exposure, is_loopback
from ocak.store.db import Database, open_database
from ocak.store.keys import create_key, revoke_key
from ocak.store.usage import recent_usage

CHAT = "/v1/chat/completions"
MSG = [{"role": "user", "content": "one two three four five six"}]


class Api:
    """The app on a fake engine, its database, and a second connection (another process)."""

    def __init__(self, client: httpx.AsyncClient, db: Database, other: Database) -> None:
        self.client = client
        self.db = db
        self.other = other

    def key(self, name: str = "k", **kw: Any) -> str:
        key, _ = create_key(self.other, name, **kw)
        return key

    async def chat(self, key: str | None = None, **body: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        payload = {"model": "fake", "messages": MSG, **body}
        return await self.client.post(CHAT, json=payload, headers=headers)


@pytest.fixture
def make_api(tmp_path: Path) -> Any:
    async def start(**settings: Any) -> AsyncIterator[Api]:
        db = open_database(tmp_path / "ocak.db")
        other = open_database(tmp_path / "ocak.db")
        app = create_app(
            Settings(data_dir=tmp_path, **settings),
            EngineRegistry([FakeEngine("fake")]),
            db=db,
        )
        async with app.router.lifespan_context(app):
            while not app.state.ocak.engines.ready:
                await asyncio.sleep(0.01)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://[::1]") as client:
                yield Api(client, db, other)
        db.close()
        other.close()

    return start


def error_of(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]  # type: ignore[no-any-return]


def run(coro_fn: Any, make_api: Any, **settings: Any) -> None:
    async def main() -> None:
        async for api in make_api(**settings):
            await coro_fn(api)

    asyncio.run(main())


def test_without_keys_the_api_is_open(make_api: Any) -> None:
    async def check(api: Api) -> None:
        r = await api.chat()
        assert r.status_code == 200
        assert (await api.client.get("/metrics")).status_code == 200

    run(check, make_api)


def test_once_a_key_exists_every_route_but_health_needs_it(make_api: Any) -> None:
    async def check(api: Api) -> None:
        key = api.key()
        r = await api.chat()
        assert r.status_code == 401
        err = error_of(r)
        assert err["code"] == "invalid_api_key" and "Bearer" in err["message"]
        assert r.headers["www-authenticate"].startswith("Bearer")
        wrong = await api.chat("ocak-" + "x" * 43)
        assert wrong.status_code == 401
        assert "ocak-xxx" not in wrong.text  # the key given is never echoed
        assert (await api.chat(key[:-1])).status_code == 401
        assert (await api.chat(key)).status_code == 200
        for path in ("/v1/models", "/metrics", "/v1/nothing-here"):
            assert (await api.client.get(path)).status_code == 401, path
        assert (
            await api.client.get("/v1/models", headers={"Authorization": key})
        ).status_code == 401
        for path in ("/health", "/health/live", "/openapi.json"):
            assert (await api.client.get(path)).status_code == 200, path
        ok = await api.client.get("/v1/models", headers={"Authorization": f"bearer {key}"})
        assert ok.status_code == 200

    run(check, make_api)


def test_metrics_can_be_made_public(make_api: Any) -> None:
    async def check(api: Api) -> None:
        api.key()
        assert (await api.client.get("/metrics")).status_code == 200
        assert (await api.client.get("/v1/models")).status_code == 401

    run(check, make_api, metrics_public=True)


def test_keys_created_and_revoked_by_another_process_apply_at_once(make_api: Any) -> None:
    async def check(api: Api) -> None:
        assert (await api.chat()).status_code == 200
        key = api.key("late")
        assert (await api.chat()).status_code == 401
        assert (await api.chat(key)).status_code == 200
        other = api.key("other")
        revoke_key(api.other, "late")
        assert (await api.chat(key)).status_code == 401
        assert (await api.chat(other)).status_code == 200
        # A loopback server with no keys left is open again, as before the first key.
        revoke_key(api.other, "other")
        assert (await api.chat()).status_code == 200

    run(check, make_api)


def test_an_exposed_server_stays_locked_when_its_last_key_is_revoked(make_api: Any) -> None:
    async def check(api: Api) -> None:
        key = api.key("only")
        assert (await api.chat(key)).status_code == 200
        revoke_key(api.other, "only")
        assert (await api.chat()).status_code == 401

    run(check, make_api, host="0.0.0.0")


def test_a_key_limited_to_some_models_gets_403_for_others(make_api: Any) -> None:
    async def check(api: Api) -> None:
        key = api.key(models=["other-model"])
        r = await api.chat(key)
        assert r.status_code == 403
        err = error_of(r)
        assert err["param"] == "model" and err["code"] == "permission_denied"
        assert (
            await api.client.post(
                "/v1/completions",
                json={"model": "fake", "prompt": "x"},
                headers={"Authorization": f"Bearer {key}"},
            )
        ).status_code == 403
        both = api.key("both", models=["fake", "other-model"])
        assert (await api.chat(both)).status_code == 200

    run(check, make_api)


def test_rate_limits_answer_429_with_retry_after(make_api: Any) -> None:
    async def check(api: Api) -> None:
        key = api.key(rpm=2)
        assert [(await api.chat(key)).status_code for _ in range(2)] == [200, 200]
        r = await api.chat(key)
        assert r.status_code == 429
        assert error_of(r)["code"] == "rate_limit_exceeded"
        assert 1 <= int(r.headers["retry-after"]) <= 60
        other = api.key("other", rpm=2)  # limits are per key
        assert (await api.chat(other)).status_code == 200

    run(check, make_api)


def test_tokens_per_minute_and_budgets_count_what_requests_used(make_api: Any) -> None:
    async def check(api: Api) -> None:
        tpm = api.key("tpm", tpm=10)
        first = await api.chat(tpm)
        used = first.json()["usage"]["total_tokens"]
        assert used >= 10  # one request is enough to reach the minute's tokens
        r = await api.chat(tpm)
        assert r.status_code == 429 and "tokens per minute" in error_of(r)["message"]
        assert "retry-after" in r.headers

        budget = api.key("budget", budget_tokens=used + 1)
        assert (await api.chat(budget)).status_code == 200
        assert (await api.chat(budget)).status_code == 200  # under budget when it started
        r = await api.chat(budget)
        assert r.status_code == 429
        assert error_of(r)["code"] == "insufficient_quota"

    run(check, make_api)


def test_budgets_survive_a_restart(make_api: Any) -> None:
    keys: list[str] = []

    async def first(api: Api) -> None:
        key = api.key("b", budget_tokens=10)
        assert (await api.chat(key)).status_code == 200
        keys.append(key)

    async def second(api: Api) -> None:
        r = await api.chat(keys[0])
        assert r.status_code == 429 and error_of(r)["code"] == "insufficient_quota"

    run(first, make_api)
    run(second, make_api)


def test_every_model_request_leaves_a_usage_row(make_api: Any) -> None:
    async def check(api: Api) -> None:
        key = api.key("alice")
        ok = await api.chat(key, max_tokens=3)
        stream = await api.chat(key, stream=True)
        missing = await api.chat(None)
        restricted_key = api.key("restricted", models=["x"])
        denied = await api.chat(restricted_key)
        unknown = await api.chat(key, model="gpt-9")
        rows = {r.request_id: r for r in recent_usage(api.db)}
        assert missing.headers["x-request-id"] not in rows  # never reached a model
        row = rows[ok.headers["x-request-id"]]
        usage = ok.json()["usage"]
        assert (row.key_name, row.model, row.backend, row.locality) == (
            "alice",
            "fake",
            "fake:fake",
            "local",
        )
        assert (row.prompt_tokens, row.completion_tokens) == (
            usage["prompt_tokens"],
            usage["completion_tokens"],
        )
        assert row.status == "completed" and row.finish_reason == "length"
        assert row.ttft_ms is not None and row.total_ms >= row.ttft_ms
        srow = rows[stream.headers["x-request-id"]]
        assert srow.stream and srow.status == "completed" and srow.completion_tokens > 0
        drow = rows[denied.headers["x-request-id"]]
        assert (drow.status, drow.http_status, drow.error_code) == (
            "rejected",
            403,
            "permission_denied",
        )
        urow = rows[unknown.headers["x-request-id"]]
        assert (urow.status, urow.error_code, urow.model) == (
            "rejected",
            "model_not_found",
            "gpt-9",
        )

    run(check, make_api)


def test_metrics_count_requests_tokens_and_latency(make_api: Any) -> None:
    async def check(api: Api) -> None:
        for _ in range(3):
            assert (await api.chat(max_tokens=2)).status_code == 200
        assert (await api.chat(model="no-such-model-" + "z" * 50)).status_code == 404
        text = (await api.client.get("/metrics")).text
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
        }

        def value(name: str, **labels: str) -> float:
            return samples[(name, tuple(sorted(labels.items())))]

        fake = {"model": "fake", "backend": "fake:fake"}
        assert value("ocak_requests_total", status="completed", **fake) == 3
        assert value("ocak_completion_tokens_total", **fake) == 6
        assert value("ocak_prompt_tokens_total", **fake) > 0
        assert value("ocak_request_duration_seconds_count", **fake) == 3
        assert value("ocak_time_to_first_token_seconds_count", **fake) == 3
        # A model name the server does not serve is not a label value.
        assert value("ocak_requests_total", model="other", backend="none", status="rejected") == 1
        assert not any("no-such-model" in str(k) for k in samples)
        assert value("ocak_queue_depth", model="fake") == 0
        assert value("ocak_sequence_slots", model="fake") == 16
        assert value("ocak_active_sequences", model="fake") == 0

    run(check, make_api)


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "ocak.access"]


def test_one_json_log_line_per_request_without_secrets_or_content(
    make_api: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ocak.access")
    secret_text = "the-prompt-text-is-private"

    async def check(api: Api) -> None:
        key = api.key("carol")
        r = await api.chat(
            key,
            messages=[{"role": "user", "content": secret_text}],
            max_tokens=2,
        )
        assert r.status_code == 200
        await api.client.get("/health", headers={"x-request-id": "probe-1"})
        lines = access_lines(caplog)
        assert len(lines) == 2
        line = next(x for x in lines if x["request_id"] == r.headers["x-request-id"])
        assert line["key"] == "carol" and line["model"] == "fake"
        assert line["status"] == "completed" and line["http_status"] == 200
        assert line["completion_tokens"] == 2 and line["ttft_ms"] is not None
        assert any(x["request_id"] == "probe-1" and x["path"] == "/health" for x in lines)
        text = "\n".join(r.getMessage() for r in caplog.records)
        assert key not in text and key[5:15] not in text
        assert secret_text not in text and "You said" not in text
        assert "authorization" not in text.lower()

    run(check, make_api)


def test_content_is_logged_only_when_the_operator_asks(
    make_api: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ocak.access")

    async def check(api: Api) -> None:
        await api.chat(messages=[{"role": "user", "content": "hello log"}], max_tokens=3)
        await api.chat(messages=[{"role": "user", "content": "hello stream"}], stream=True)
        lines = access_lines(caplog)
        plain, streamed = lines
        assert plain["content"]["request"]["messages"][0]["content"] == "hello log"
        reply = plain["content"]["response"]["choices"][0]["message"]["content"]
        assert reply == "You said: hello"
        assert streamed["content"]["response"] == "You said: hello stream"

    run(check, make_api, log_content=True)


def test_bodies_over_the_limit_are_413_whether_declared_or_chunked(make_api: Any) -> None:
    async def check(api: Api) -> None:
        big = json.dumps({"model": "fake", "messages": MSG, "pad": "x" * 5000}).encode()
        r = await api.client.post(CHAT, content=big)
        assert r.status_code == 413
        assert error_of(r)["code"] == "request_too_large"

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(big), 1000):
                yield big[i : i + 1000]

        r = await api.client.post(CHAT, content=chunks())
        assert r.status_code == 413

        small = json.dumps({"model": "fake", "messages": MSG}).encode()

        async def small_chunks() -> AsyncIterator[bytes]:
            yield small[:10]
            yield small[10:]

        assert (await api.client.post(CHAT, content=small_chunks())).status_code == 200

    run(check, make_api, max_body_bytes=4096)


def test_message_count_and_max_tokens_caps_name_the_parameter(make_api: Any) -> None:
    async def check(api: Api) -> None:
        r = await api.chat(messages=MSG * 5)
        assert r.status_code == 400 and error_of(r)["param"] == "messages"
        r = await api.chat(max_tokens=4)
        assert r.status_code == 400 and error_of(r)["param"] == "max_tokens"
        r = await api.chat(max_completion_tokens=4)
        assert r.status_code == 400 and error_of(r)["param"] == "max_completion_tokens"
        r = await api.client.post(
            "/v1/completions", json={"model": "fake", "prompt": "a b c", "max_tokens": 100}
        )
        assert r.status_code == 400 and error_of(r)["param"] == "max_tokens"
        # No max_tokens: the cap is the default.
        r = await api.chat()
        assert r.status_code == 200
        assert r.json()["usage"]["completion_tokens"] == 3
        assert r.json()["choices"][0]["finish_reason"] == "length"

    run(check, make_api, max_messages=4, max_tokens_limit=3)


def test_the_authenticator_is_the_hook_for_other_edges(tmp_path: Path) -> None:
    db = open_database(tmp_path / "ocak.db")
    assert Authenticator(db).check(None, "m") is None  # no keys: open
    key, info = create_key(db, "g", models=["m"], rpm=1)
    auth = Authenticator(db)
    with pytest.raises(AuthenticationError):
        auth.check(None, "m")
    with pytest.raises(AuthenticationError):
        auth.check("nope", "m")
    with pytest.raises(PermissionDenied):
        auth.check(key, "other")
    assert auth.check(key) == info  # no model: authentication only, nothing counted
    assert auth.check(key, "m") == info
    with pytest.raises(RateLimited) as exc:
        auth.check(key, "m")
    assert exc.value.retry_after is not None


def test_bearer_tokens_are_read_from_the_authorization_header() -> None:
    assert bearer_token([(b"authorization", b"Bearer abc")]) == "abc"
    assert bearer_token([(b"authorization", b"bearer  abc ")]) == "abc"
    assert bearer_token([(b"authorization", b"Basic abc")]) is None
    assert bearer_token([(b"authorization", b"Bearer ")]) is None
    assert bearer_token([]) is None


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("myhost.example", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_listening_beyond_loopback_needs_a_key_or_an_explicit_override(tmp_path: Path) -> None:
    db = open_database(tmp_path / "ocak.db")
    exposed = Settings(data_dir=tmp_path, host="0.0.0.0")
    with pytest.raises(ConfigError, match=r"refusing to listen on 0\.0\.0\.0 with no API keys"):
        check_exposure(exposed, Authenticator(db, required=True))
    check_exposure(Settings(data_dir=tmp_path), Authenticator(db))
    check_exposure(
        Settings(data_dir=tmp_path, host="0.0.0.0", allow_no_keys=True), Authenticator(db)
    )
    create_key(db, "k")
    check_exposure(exposed, Authenticator(db, required=True))


def test_text_that_is_not_unicode_is_a_400_naming_the_parameter(make_api: Any) -> None:
    """JSON can spell a lone surrogate; no tokenizer, log or database can take one."""

    async def check(api: Api) -> None:
        bodies = {
            "messages.[0].content": '{"model":"fake","messages":'
            '[{"role":"user","content":"a\\ud800"}]}',
            "stop.[1]": '{"model":"fake","messages":[{"role":"user","content":"a"}],'
            '"stop":["x","\\udfff"]}',
        }
        for param, raw in bodies.items():
            r = await api.client.post(CHAT, content=raw)
            assert r.status_code == 400
            assert error_of(r)["param"] == param

    run(check, make_api)
