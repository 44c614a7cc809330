"""Web safety from a real browser: Debian's Chromium driven by Playwright.

Chromium's ``--host-resolver-rules`` maps ``evil.test`` and ``trusted.test`` to
127.0.0.1, which is what a hostile DNS name does in a rebinding attack. Pages are
served from a second loopback port; ocak runs as ``ocak serve`` with
``--allowed-origin http://trusted.test:PORT``.

Needs Chromium (tests/browser.py: ``make test`` installs Debian's package).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page

from browser import chromium
from helpers import ServerProcess, free_port, running

# What a hostile DNS name does in a rebinding attack: these names resolve to 127.0.0.1.
RESOLVE = ["--host-resolver-rules=MAP evil.test 127.0.0.1, MAP trusted.test 127.0.0.1"]


class _Blank(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        page = b"<!doctype html><title>page</title><p>a web page</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def pages() -> Iterator[int]:
    """A web server for the pages (any host name reaches it through the resolver rules)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), _Blank)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield int(httpd.server_address[1])
    httpd.shutdown()


@pytest.fixture(scope="module")
def ocak_server(pages: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("browser-data")
    with running(
        ["--allowed-origin", f"http://trusted.test:{pages}", "--parallel", "2"],
        env={"OCAK_DATA_DIR": str(data)},
    ) as proc:
        yield proc


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from chromium(*RESOLVE)


def open_page(browser: Browser, url: str) -> Page:
    page = browser.new_page()
    assert page.goto(url) is not None
    return page


FETCH = """async ([url, init]) => {
  try {
    const r = await fetch(url, init);
    return {status: r.status, body: await r.text()};
  } catch (e) {
    return {error: String(e)};
  }
}"""
CHAT = {"model": "default", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}


def fetch(page: Page, url: str, **init: Any) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate(FETCH, [url, init])
    return result


def test_a_local_web_tool_chats_from_the_browser(
    browser: Browser, pages: int, ocak_server: ServerProcess
) -> None:
    page = open_page(browser, f"http://localhost:{pages}/")
    r = fetch(
        page,
        f"{ocak_server.url}/v1/chat/completions",
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": "Bearer unused"},
        body=json.dumps(CHAT),
    )  # a preflighted request: JSON and an Authorization header
    assert r.get("status") == 200, r
    assert json.loads(r["body"])["choices"][0]["message"]["role"] == "assistant"
    page.close()


def test_a_configured_origin_reads_the_api(
    browser: Browser, pages: int, ocak_server: ServerProcess
) -> None:
    page = open_page(browser, f"http://trusted.test:{pages}/")
    r = fetch(page, f"{ocak_server.url}/v1/models")
    assert r.get("status") == 200, r
    assert any(m["id"] == "default" for m in json.loads(r["body"])["data"])
    page.close()


def test_a_hostile_page_is_refused_before_the_model_runs(
    browser: Browser, pages: int, ocak_server: ServerProcess
) -> None:
    page = open_page(browser, f"http://evil.test:{pages}/")
    models = fetch(page, f"{ocak_server.url}/v1/models")
    assert "error" in models  # no CORS headers: the page reads nothing
    card = {"id": "planted", "name": "Planted", "persona": "from a web page"}
    for path, body in (("/v1/chat/completions", CHAT), ("/v1/characters", card)):
        # A "simple" request: text/plain needs no preflight, so it reaches the server.
        sent = fetch(
            page,
            f"{ocak_server.url}{path}",
            method="POST",
            mode="no-cors",
            headers={"Content-Type": "text/plain"},
            body=json.dumps(body),
        )
        assert sent.get("status") == 0  # opaque: the page learns nothing either way
    page.close()
    listed = httpx.get(f"{ocak_server.url}/v1/characters", timeout=10).json()["data"]
    assert "planted" not in {c["id"] for c in listed}
    lines = [json.loads(x) for x in ocak_server.log().splitlines() if x.startswith('{"ts"')]
    # the server's request log: one line each, refused before any route ran
    refused = [r for r in lines if r.get("error_code") == "origin_not_allowed"]
    assert {(r["method"], r["path"]) for r in refused} >= {
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/characters"),
    }
    assert all(r["http_status"] == 403 and "completion_tokens" not in r for r in refused)


def test_dns_rebinding_reads_nothing(browser: Browser, ocak_server: ServerProcess) -> None:
    """The page's own origin is evil.test:PORT, resolving to ocak's address and port."""
    page = browser.new_page()
    response = page.goto(f"http://evil.test:{ocak_server.port}/v1/models")
    assert response is not None and response.status == 403
    assert "host_not_allowed" in (response.text() or "")
    same_origin = fetch(page, "/v1/chat/completions", method="POST", body=json.dumps(CHAT))
    assert same_origin.get("status") == 403, same_origin
    page.close()
