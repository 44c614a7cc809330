"""The web console in a real browser (Debian's Chromium through Playwright) on a real
``ocak serve`` with the bundled default model: the page loads under its strict CSP with
no script error, a chat answer streams in, stops and regenerates, a card is imported
(a SillyTavern PNG), edited with errors shown as one types, and chats with each turn's
emotion and relationship shown, and its voice played; a model is pulled with a
progress bar, loaded and unloaded; keys are asked for when the server has them, created
(shown once) and revoked; the usage chart draws the requests made. The chat works
from the keyboard alone, and no page scrolls sideways at 360 pixels wide.

Screenshots go to ``$OCAK_SCREENSHOTS`` (default: the test's temporary folder).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from browser import chromium
from helpers import ServerProcess, running
from hub_stub import HubFile, HubRepo, HubStub
from keys_helpers import create_key
from ocak.characters.tavern import png_with_card
from ocak.models.store import default_model_path
from paths import EXAMPLES as PROJECT_EXAMPLES

pytestmark = pytest.mark.slow

EXAMPLES = PROJECT_EXAMPLES / "characters"

CARD = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "Mara",
        "description": "Mara keeps the lighthouse on the cliff and speaks in short sentences.",
        "personality": "gruff, loyal",
        "scenario": "A stormy night at the lighthouse.",
        "first_mes": "Door's open. Shut it behind you.",
        "mes_example": "",
    },
}


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("OCAK_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from chromium()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("console-data")
    with running(["--parallel", "2"], env={"OCAK_DATA_DIR": str(data)}) as proc:
        yield proc


class Watched:
    """A page and every script error or CSP violation it reported."""

    def __init__(self, browser: Browser, url: str, **options: object) -> None:
        self.page: Page = browser.new_page(**options)  # type: ignore[arg-type]
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        response = self.page.goto(url)
        assert response is not None and response.ok
        self.headers = response.headers

    def close(self) -> None:
        self.page.close()
        assert self.errors == [], self.errors


def chat_ready(page: Page) -> None:
    expect(page.locator("#chat-model option[value=default]")).to_have_count(1)
    page.fill("#chat-temperature", "0")


def test_the_console_loads_and_an_answer_streams(
    browser: Browser, server: ServerProcess, shots: Path
) -> None:
    w = Watched(browser, f"{server.url}/")
    csp = w.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    page = w.page
    chat_ready(page)
    page.fill("#chat-max-tokens", "24")
    page.fill("#chat-input", "Name three colours.")
    page.evaluate("""() => {
        window.textStates = new Set();
        new MutationObserver(() => {
            const t = document.querySelector('#chat-log li.assistant:last-child .text');
            if (t) window.textStates.add(t.textContent);
        }).observe(document.querySelector('#chat-log'),
                   {subtree: true, childList: true, characterData: true});
    }""")
    page.click("#chat-send")
    answer = page.locator("#chat-log li.assistant").last
    expect(answer.locator(".meta")).to_contain_text("tokens", timeout=60_000)
    assert len(answer.locator(".text").inner_text().strip()) > 0
    meta = answer.locator(".meta").inner_text()
    assert meta.startswith("local/default · llama.cpp · local · "), meta  # backend, engine
    assert "first token" in meta and "tokens/s" in meta, meta
    states = page.evaluate("() => window.textStates.size")
    assert states >= 3, f"the answer arrived in {states} pieces: not streamed"
    page.screenshot(path=str(shots / "playground.png"), full_page=True)

    # Stop a long answer once it has started, then regenerate it.
    page.fill("#chat-max-tokens", "400")
    page.fill("#chat-input", "Tell me a long story about a lighthouse.")
    page.press("#chat-input", "Enter")
    second = page.locator("#chat-log li.assistant").nth(1)
    expect(second.locator(".text")).not_to_be_empty(timeout=60_000)
    page.click("#chat-stop")
    expect(second.locator(".meta")).to_contain_text("stopped", timeout=10_000)
    expect(page.locator("#chat-regenerate")).to_be_enabled()
    page.fill("#chat-max-tokens", "8")
    page.click("#chat-regenerate")
    expect(page.locator("#chat-log li.assistant")).to_have_count(2)
    again = page.locator("#chat-log li.assistant").nth(1)
    expect(again.locator(".meta")).to_contain_text("tokens", timeout=60_000)
    assert "stopped" not in again.locator(".meta").inner_text()

    # JSON-schema mode: the answer is constrained to the schema in the box.
    page.click("#chat-clear")
    page.select_option("#chat-mode", "json")
    expect(page.locator("#chat-schema")).to_be_visible()
    page.fill("#chat-max-tokens", "48")
    page.fill("#chat-input", "What is the capital of France?")
    page.press("#chat-input", "Enter")
    shaped = page.locator("#chat-log li.assistant").last
    expect(shaped.locator(".meta")).to_contain_text("tokens", timeout=60_000)
    assert isinstance(json.loads(shaped.locator(".text").inner_text())["answer"], str)

    # Tools mode: with tool_choice required, the answer is a call of the tool in the box.
    page.click("#chat-clear")
    page.select_option("#chat-mode", "tools")
    page.select_option("#chat-tool-choice", "required")
    page.fill("#chat-input", "What is the weather in Paris?")
    page.press("#chat-input", "Enter")
    called = page.locator("#chat-log li.assistant").last
    expect(called.locator(".meta")).to_contain_text("tokens", timeout=60_000)
    name, _, arguments = called.locator(".text").inner_text().partition("(")
    assert name == "get_weather" and "city" in json.loads(arguments.rstrip(")")), arguments
    w.close()


def test_a_card_is_imported_checked_as_typed_and_chats(
    browser: Browser, server: ServerProcess, shots: Path, tmp_path: Path
) -> None:
    png = tmp_path / "mara.png"
    png.write_bytes(png_with_card(CARD))
    w = Watched(browser, f"{server.url}/#/characters")
    page = w.page
    page.set_input_files("#card-file", str(png))
    expect(page.locator("#editor-title")).to_have_text("Mara")
    expect(page.locator("#character-list button", has_text="Mara")).to_have_count(1)

    editor = page.locator("#card-text")
    good = editor.input_value()
    editor.fill(good.replace('"name": "Mara"', '"name": 42', 1))
    expect(page.locator("#card-errors")).to_contain_text("name")
    editor.fill(good[:-3])
    expect(page.locator("#card-errors")).to_contain_text("Not JSON")
    editor.fill(good)
    expect(page.locator("#card-errors")).to_have_text("")

    page.fill("#character-input", "Evening, Mara. Can I wait out the storm here?")
    page.press("#character-input", "Enter")
    turn = page.locator("#character-log li").nth(1)
    expect(turn.locator(".turn-details")).to_contain_text("emotion:", timeout=120_000)
    expect(turn.locator(".text")).to_contain_text("Mara:")

    # A voiced turn: the answer's sentences as audio the page can play.
    page.check("#character-voice")
    page.fill("#character-input", "Is the lamp still lit?")
    page.press("#character-input", "Enter")
    spoken = page.locator("#character-log li").nth(3)
    expect(spoken.locator("audio").first).to_be_attached(timeout=120_000)
    duration = spoken.locator("audio").first.evaluate(
        """a => new Promise(done => a.readyState >= 1 ? done(a.duration)
                : a.addEventListener('loadedmetadata', () => done(a.duration)))"""
    )
    assert duration > 0.2, duration
    page.screenshot(path=str(shots / "characters.png"), full_page=True)

    # A YAML card dropped on the page (a drop event carrying the file, as a drag does).
    yaml_card = (EXAMPLES / "bram.yaml").read_text()
    page.evaluate(
        """text => {
            const data = new DataTransfer();
            data.items.add(new File([text], 'bram.yaml', {type: 'application/yaml'}));
            document.querySelector('#drop').dispatchEvent(
                new DragEvent('drop', {dataTransfer: data, bubbles: true, cancelable: true}));
        }""",
        yaml_card,
    )
    expect(page.locator("#character-list button", has_text="Bram")).to_have_count(1)
    expect(page.locator("#editor-title")).to_contain_text("Bram")
    w.close()


def test_keys_are_asked_for_created_revoked_and_usage_is_charted(
    browser: Browser, shots: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    data = tmp_path_factory.mktemp("console-keys")
    admin = create_key(data, "owner", "--admin")
    user = create_key(data, "player")
    with running(env={"OCAK_DATA_DIR": str(data)}) as server:
        prompt = {"id": "npc-greeting", "messages": [{"role": "system", "content": "Greet."}],
                  "labels": ["production"], "description": "How NPCs greet"}  # fmt: skip
        r = httpx.post(f"{server.url}/v1/prompts", json=prompt,
                       headers={"Authorization": f"Bearer {admin}"})  # fmt: skip
        assert r.status_code == 201, r.text
        for key in (admin, user, user):  # usage to chart: three requests, two keys
            r = httpx.post(f"{server.url}/v1/chat/completions", timeout=60,
                           headers={"Authorization": f"Bearer {key}"},
                           json={"model": "default", "max_tokens": 2,
                                 "messages": [{"role": "user", "content": "Hi"}]})  # fmt: skip
            assert r.status_code == 200, r.text
        w = Watched(browser, f"{server.url}/#/usage")
        page = w.page
        expect(page.locator("#login")).to_be_visible()  # nothing is read without a key
        assert page.locator("#usage-table tbody tr").count() == 0
        page.fill("#login-key", "sk-not-a-key")
        page.press("#login-key", "Enter")
        expect(page.locator("#status")).to_have_text("That key was refused.")
        w.errors.clear()  # the refused fetch is logged by the browser: expected
        page.fill("#login-key", admin)
        page.press("#login-key", "Enter")
        expect(page.locator("#login")).to_be_hidden()

        page.select_option("#usage-by", "key")
        expect(page.locator("#usage-table tbody tr")).to_have_count(2)
        expect(page.locator("#usage-chart svg rect.bar")).not_to_have_count(0)
        rows = page.locator("#usage-table tbody tr").all_inner_texts()
        assert any(r.startswith("player") and "\t2\t" in r for r in rows), rows
        expect(page.locator("#prompts-table tbody tr")).to_contain_text("production → v1")
        page.screenshot(path=str(shots / "usage.png"), full_page=True)

        page.fill("#key-name", "team")
        page.click("#key-form button[type=submit]")
        expect(page.locator("#key-created")).to_contain_text("shown once")
        shown = page.locator("#key-created").inner_text().rsplit(": ", 1)[1]
        models = httpx.get(f"{server.url}/v1/models", headers={"Authorization": f"Bearer {shown}"})
        assert models.status_code == 200  # the key shown works at once
        page.on("dialog", lambda dialog: dialog.accept())
        page.locator("#keys-table tr", has_text="team").get_by_role("button").click()
        expect(page.locator("#keys-table tr", has_text="team")).to_have_count(0)
        models = httpx.get(f"{server.url}/v1/models", headers={"Authorization": f"Bearer {shown}"})
        assert models.status_code == 401  # and is refused once revoked
        w.close()

        # A key without the administrator scope reads its models but not the keys.
        w = Watched(browser, f"{server.url}/#/usage")
        w.page.fill("#login-key", user)
        w.page.press("#login-key", "Enter")
        expect(w.page.locator("#status")).to_contain_text("administrator")
        w.errors.clear()  # the 403s, logged by the browser
        w.close()


def test_a_model_is_pulled_with_progress_loaded_and_unloaded(
    browser: Browser, shots: Path, tmp_path: Path
) -> None:
    gguf = default_model_path()
    repo = HubRepo("test-org/Tiny-GGUF", {gguf.name: HubFile(gguf.name, source=gguf)})
    with (
        HubStub(repo) as hub,
        running(env={"OCAK_DATA_DIR": str(tmp_path), "HF_ENDPOINT": hub.url}) as server,
    ):
        w = Watched(browser, f"{server.url}/#/models")
        page = w.page
        expect(page.locator("#models-table tbody tr", has_text="default")).to_contain_text("ready")
        expect(page.locator("#doctor-findings li")).not_to_have_count(0)  # ocak doctor's findings
        page.fill("#pull-model", "test-org/Tiny-GGUF")
        page.evaluate("""() => { window.progressSeen = 0;
            new MutationObserver(() => { window.progressSeen += 1; })
              .observe(document.querySelector('#pull-progress'), {attributes: true}); }""")
        page.press("#pull-model", "Enter")
        expect(page.locator("#pull-status")).to_contain_text("Pulled", timeout=120_000)
        assert page.evaluate("() => window.progressSeen") >= 2  # the bar moved while it pulled
        row = page.locator("#models-table tbody tr", has_text="test-org/Tiny-GGUF")
        expect(row).to_have_count(1)
        row.get_by_role("button", name="Load").click()
        expect(row).to_contain_text("ready", timeout=60_000)
        page.screenshot(path=str(shots / "models.png"), full_page=True)
        row.get_by_role("button", name="Unload").click()
        expect(row.get_by_role("button", name="Load")).to_be_visible(timeout=30_000)

        page.fill("#pull-model", "test-org/No-Such-Repo")
        page.press("#pull-model", "Enter")
        expect(page.locator("#pull-status")).to_contain_text("No-Such-Repo:", timeout=60_000)
        w.errors.clear()  # the 404 of the missing repo, logged by the browser
        w.close()


def test_the_chat_works_from_the_keyboard_alone(browser: Browser, server: ServerProcess) -> None:
    w = Watched(browser, f"{server.url}/")
    page = w.page
    chat_ready(page)
    page.fill("#chat-max-tokens", "8")
    for _ in range(40):  # Tab through the page until the message box has the focus
        if page.evaluate("() => document.activeElement.id") == "chat-input":
            break
        page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.id") == "chat-input"
    page.keyboard.type("Say hello.")
    page.keyboard.press("Enter")
    answer = page.locator("#chat-log li.assistant").last
    expect(answer.locator(".meta")).to_contain_text("tokens", timeout=60_000)
    assert page.evaluate("() => document.activeElement.id") == "chat-input"  # ready for more
    page.keyboard.press("Shift+Tab")  # the buttons and pages are reachable the same way
    w.close()


@pytest.mark.parametrize("page_name", ["chat", "models", "characters", "usage"])
def test_no_page_scrolls_sideways_at_360_pixels(
    browser: Browser, server: ServerProcess, shots: Path, page_name: str
) -> None:
    w = Watched(browser, f"{server.url}/#/{page_name}", viewport={"width": 360, "height": 740})
    page = w.page
    expect(page.locator(f"section[data-page={page_name}]")).to_be_visible()
    page.wait_for_load_state("networkidle")
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 360, f"{page_name} is {width} px wide at a 360 px viewport"
    page.screenshot(path=str(shots / f"narrow-{page_name}.png"), full_page=True)
    w.close()
