"""Safe from web pages: Host and Origin checks, CORS, body types, WebSockets, TLS.

The headline cases run against a real default ``ocak serve`` (the requests a
hostile page or a DNS-rebinding attack would send); policy details and the
WebSocket upgrade run in-process or on a small uvicorn app wrapped in the same
middleware. tests/test_browser.py does the same from a real browser.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from helpers import ServerProcess, free_port
from ocak.config import ConfigError, Settings
from ocak.server.runner import warn_plain_http
from ocak.server.webguard import WebGuard, WebPolicy

CHAT = {"model": "default", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
EVIL = "http://evil.example"


def body(r: httpx.Response) -> dict[str, Any]:
    data = r.json()
    assert set(data) == {"error"} and set(data["error"]) == {"message", "type", "param", "code"}
    return data["error"]  # type: ignore[no-any-return]


def post(server: ServerProcess, path: str, content: str, **headers: str) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", content=content, headers=headers, timeout=60)


# -- a real default server ------------------------------------------------------------


def test_a_rebinding_host_is_refused_before_anything_runs(server: ServerProcess) -> None:
    host = f"evil.example:{server.port}"
    r = httpx.get(f"{server.url}/v1/models", headers={"Host": host}, timeout=10)
    assert r.status_code == 403 and body(r)["code"] == "host_not_allowed"
    assert "evil.example" in body(r)["message"] and "allowed_hosts" in body(r)["message"]
    chat = post(server, "/v1/chat/completions", '{"model":"default"}', Host=host)
    assert chat.status_code == 403
    assert httpx.get(f"{server.url}/metrics", headers={"Host": host}).status_code == 403
    for ok in (f"localhost:{server.port}", f"127.0.0.1:{server.port}", "[::1]"):
        assert httpx.get(f"{server.url}/v1/models", headers={"Host": ok}).status_code == 200


def test_a_hostile_page_cannot_run_the_model_or_write_characters(server: ServerProcess) -> None:
    plain = {"Content-Type": "text/plain", "Origin": EVIL}
    r = post(server, "/v1/chat/completions", json.dumps(CHAT), **plain)
    assert r.status_code == 403 and body(r)["code"] == "origin_not_allowed"
    assert "access-control-allow-origin" not in r.headers
    card = {"id": "evil-npc", "name": "Evil", "persona": "planted by a web page"}
    r = post(server, "/v1/characters", json.dumps(card), **plain)
    assert r.status_code == 403
    listed = httpx.get(f"{server.url}/v1/characters", timeout=10).json()["data"]
    assert "evil-npc" not in {c["id"] for c in listed}
    null = post(server, "/v1/chat/completions", json.dumps(CHAT), Origin="null")
    assert null.status_code == 403 and "'null'" in body(null)["message"]
    metrics = httpx.get(f"{server.url}/metrics", headers={"Origin": EVIL}, timeout=10)
    assert metrics.status_code == 403


def test_a_hostile_preflight_is_refused(server: ServerProcess) -> None:
    r = httpx.options(
        f"{server.url}/v1/chat/completions",
        headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"},
    )
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers


def test_a_loopback_origin_gets_its_preflight_and_cors_headers(server: ServerProcess) -> None:
    origin = "http://localhost:5173"  # a local web tool (Vite's default port)
    pre = httpx.options(
        f"{server.url}/v1/chat/completions",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == origin
    assert "POST" in pre.headers["access-control-allow-methods"]
    assert pre.headers["access-control-allow-headers"] == "authorization, content-type"
    assert "access-control-allow-credentials" not in pre.headers
    r = httpx.post(
        f"{server.url}/v1/chat/completions", json=CHAT, headers={"Origin": origin}, timeout=60
    )
    assert r.status_code == 200 and r.json()["choices"]
    assert r.headers["access-control-allow-origin"] == origin
    assert "x-request-id" in r.headers["access-control-expose-headers"]
    assert r.headers["vary"] == "Origin"


def test_a_page_may_send_json_only(server: ServerProcess) -> None:
    r = post(
        server,
        "/v1/chat/completions",
        json.dumps(CHAT),
        **{"Content-Type": "text/plain", "Origin": "http://127.0.0.1:3000"},
    )
    assert r.status_code == 415 and body(r)["code"] == "unsupported_media_type"
    assert "application/json" in body(r)["message"]


def test_clients_without_an_origin_work_as_before(server: ServerProcess) -> None:
    """curl's default form content type, SDKs and games send no Origin."""
    r = post(
        server,
        "/v1/chat/completions",
        json.dumps(CHAT),
        **{"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] is not None
    assert "access-control-allow-origin" not in r.headers


# -- the policy -----------------------------------------------------------------------


def test_the_policy_on_loopback() -> None:
    policy = WebPolicy(
        listen_host="127.0.0.1",
        allowed_hosts=["ocak.lan", "*.mods.example"],
        allowed_origins=["https://mod.example", "https://*.itch.zone"],
    )
    for host in ("localhost", "localhost:8000", "127.0.0.1:9", "[::1]:8000", "app.localhost"):
        assert policy.host_allowed(host), host
    assert policy.host_allowed("ocak.lan:8000") and policy.host_allowed("a.mods.example")
    for host in ("evil.example", "127.0.0.1.evil.example", "192.168.1.5:8000", "mods.example"):
        assert not policy.host_allowed(host), host
    assert policy.origin_allowed("https://mod.example", "localhost:8000")
    assert policy.origin_allowed("https://game.itch.zone", "localhost:8000")
    assert policy.origin_allowed("http://localhost:3000", "localhost:8000")
    assert policy.origin_allowed("https://127.0.0.1", "localhost:8000")
    assert policy.origin_allowed("http://ocak.lan:8000", "ocak.lan:8000")  # same origin
    for origin in ("null", "http://evil.example", "http://localhost.evil.example", "file://"):
        assert not policy.origin_allowed(origin, "localhost:8000"), origin


def test_beyond_loopback_ip_literals_are_answered_and_names_are_not() -> None:
    policy = WebPolicy(listen_host="0.0.0.0", allowed_hosts=[], allowed_origins=[])
    assert policy.host_allowed("192.168.1.5:8000") and policy.host_allowed("[fe80::1]:80")
    assert not policy.host_allowed("rebind.evil.example:8000")
    assert not WebPolicy(
        listen_host="127.0.0.1", allowed_hosts=[], allowed_origins=[]
    ).host_allowed("192.168.1.5")


def test_hosts_and_origins_come_from_settings_env_and_flags(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OCAK_ALLOWED_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("OCAK_ALLOWED_HOSTS", "ocak.lan")
    settings = Settings.load()
    assert settings.allowed_origins == ["https://a.example", "https://b.example"]
    assert settings.allowed_hosts == ["ocak.lan"]


# -- WebSockets -----------------------------------------------------------------------


async def _echo(ws: WebSocket) -> None:
    await ws.accept()
    await ws.send_text(await ws.receive_text())
    await ws.close()


@pytest.fixture(scope="module")
def ws_url() -> Iterator[str]:
    """A WebSocket echo behind the same guard ``ocak serve`` installs."""
    policy = WebPolicy(listen_host="127.0.0.1", allowed_hosts=[], allowed_origins=[])
    app = WebGuard(Starlette(routes=[WebSocketRoute("/ws", _echo)]), policy)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"ws://127.0.0.1:{port}/ws"
    server.should_exit = True
    thread.join(10)


def test_a_websocket_upgrade_from_a_hostile_origin_is_refused(ws_url: str) -> None:
    with pytest.raises(InvalidStatus) as refused, connect(ws_url, origin=EVIL):  # type: ignore[arg-type]
        pass
    assert refused.value.response.status_code == 403
    port = int(ws_url.rsplit(":", 1)[1].split("/")[0])
    with (  # DNS rebinding: a hostile name that resolves to this machine
        pytest.raises(InvalidStatus) as rebound,
        connect(f"ws://evil.example:{port}/ws", sock=socket.create_connection(("127.0.0.1", port))),
    ):
        pass
    assert rebound.value.response.status_code == 403
    with connect(ws_url, origin="http://localhost:8080") as ws:  # type: ignore[arg-type]
        ws.send("ping")
        assert ws.recv(timeout=5) == "ping"
    with connect(ws_url) as ws:  # a game: no Origin at all
        ws.send("pong")
        assert ws.recv(timeout=5) == "pong"


# -- TLS ------------------------------------------------------------------------------


def self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_tls_with_a_self_signed_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    proc = ServerProcess(
        ["--tls-cert", str(cert), "--tls-key", str(key), "--parallel", "1", "--ctx-size", "256"],
        env={"OCAK_DATA_DIR": str(tmp_path / "data")},
    )
    try:
        url = f"https://127.0.0.1:{proc.port}"
        trust = ssl.create_default_context(cafile=str(cert))
        deadline = time.monotonic() + 120
        while True:
            assert proc.proc.poll() is None, proc.log()
            try:
                if httpx.get(f"{url}/health", verify=trust, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, proc.log()
                time.sleep(0.2)
        r = httpx.post(f"{url}/v1/chat/completions", json=CHAT, verify=trust, timeout=60)
        assert r.status_code == 200 and r.json()["choices"]
        with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port gets no answer
            httpx.get(f"http://127.0.0.1:{proc.port}/health", timeout=5).raise_for_status()
        with pytest.raises(httpx.ConnectError):  # an untrusted certificate is refused
            httpx.get(f"{url}/health", timeout=5)
        assert "listening on https://" in proc.log()
    finally:
        proc.stop()


def test_tls_needs_both_files(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path)
    with pytest.raises(ConfigError, match="tls_cert and tls_key go together"):
        Settings.load(tls_cert=cert)
    with pytest.raises(ConfigError, match="TLS file not found"):
        Settings.load(tls_cert=cert, tls_key=tmp_path / "missing.pem")


def test_keys_over_plain_http_beyond_loopback_are_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = self_signed(tmp_path)
    with caplog.at_level(logging.WARNING, logger="ocak.server"):
        assert warn_plain_http(Settings(host="0.0.0.0"), keys_on=True)
    assert "plain HTTP" in caplog.text and "--tls-cert" in caplog.text
    assert not warn_plain_http(Settings(host="0.0.0.0", tls_cert=cert, tls_key=key), True)
    assert not warn_plain_http(Settings(host="127.0.0.1"), keys_on=True)
    assert not warn_plain_http(Settings(host="0.0.0.0"), keys_on=False)
