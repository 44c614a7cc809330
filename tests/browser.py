"""Debian's Chromium, driven by Playwright, for the browser tests (web safety, console).

``make test`` installs the ``chromium`` package; Playwright's own browser download is
never used. Under CI=true a missing browser fails the importing test module instead of
skipping it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    if os.environ.get("CI") == "true":
        raise RuntimeError(
            "Chromium is missing: `make test` installs it (apt-get install chromium)"
        )
    pytest.skip("no Chromium on this machine (make test installs it)", allow_module_level=True)

FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium(*extra: str) -> Iterator[Any]:
    """Headless Chromium for a module's tests (a fixture's body: ``yield from``)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[*FLAGS, *extra],
                                    headless=True)  # fmt: skip
        yield browser
        browser.close()
