"""Safe from web pages, on a real default ``ocak serve``: the requests a hostile page or a
DNS-rebinding attack would send are refused before anything runs; loopback origins get
CORS; clients without an Origin work as before; TLS with a self-signed certificate.
tests/e2e/test_browser.py does the same from a real browser.
"""

from __future__ import annotations

import json
import ssl
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import ServerProcess, self_signed

CHAT = {"model": "default", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}


EVIL = "http://evil.example"


def body(r: httpx.Response) -> dict[str, Any]:
    data = r.json()
    assert set(data) == {"error"} and set(data["error"]) == {"message", "type", "param", "code"}
    return data["error"]  # type: ignore[no-any-return]


def post(server: ServerProcess, path: str, content: str, **headers: str) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", content=content, headers=headers, timeout=60)


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
