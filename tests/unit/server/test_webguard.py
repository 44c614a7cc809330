"""The web guard's policy (Host names, origins, wildcards), its settings, WebSocket upgrades
on a small uvicorn app wrapped in the same middleware, and the TLS settings.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from helpers import free_port, self_signed
from ocak.config import ConfigError, Settings
from ocak.server.runner import warn_plain_http
from ocak.server.webguard import WebGuard, WebPolicy

CHAT = {"model": "default", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


EVIL = "http://evil.example"


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
