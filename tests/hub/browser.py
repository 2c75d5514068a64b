"""Headless Chromium for the browse-page tests: one browser per module, a fresh context per test.

    from tests.hub.browser import CHROMIUM, browser_fixtures
    pytestmark = [requires_chromium]
    browser, page = browser_fixtures(ARTIFACTS)
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
requires_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian chromium is not installed (apt-get install -y chromium); the Makefile installs it")


def browser_fixtures(artifacts: Path):
    """(browser, page) pytest fixtures; screenshots go under `artifacts`, created on first use."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

    @pytest.fixture(scope="module")
    def browser():
        artifacts.mkdir(parents=True, exist_ok=True)
        with sync_api.sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            yield chromium
            chromium.close()

    @pytest.fixture
    def page(browser):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        yield page
        context.close()

    return browser, page
