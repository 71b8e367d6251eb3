"""Browser tests: Playwright drives Debian's Chromium (headless) against pytest-django's live server.

Every page a test opens is screenshotted under test-output/screenshots/, and any console error or
uncaught page error fails the test.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

# Sync Playwright keeps an event loop running in the test thread; Django's ORM calls from the test
# itself (fixtures creating data) are still plain synchronous calls.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-output" / "screenshots"
CHROMIUM = os.environ.get("WINNOW_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/browser/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        if os.environ.get("WINNOW_REQUIRE_SERVICES") == "1":
            pytest.fail(f"Chromium not found at {CHROMIUM}: scripts/test installs Debian's chromium")
        pytest.skip(f"Chromium not found at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


class PageErrors:
    """Console errors and uncaught exceptions; a test that provokes an API error on purpose allows it."""

    def __init__(self):
        self.errors: list[str] = []
        self.allowed: list[re.Pattern] = []

    def allow(self, pattern: str) -> None:
        self.allowed.append(re.compile(pattern))

    def console(self, message):
        if message.type == "error":
            text = f"console: {message.text} ({message.location.get('url', '')})"
            if not any(p.search(text) for p in self.allowed):
                self.errors.append(text)

    def page_error(self, error):
        self.errors.append(f"pageerror: {error}")


@pytest.fixture
def page(browser, request):
    """A fresh browser context at laptop size; fails the test on any console or page error."""
    context = browser.new_context(viewport={"width": 1440, "height": 900}, accept_downloads=True)
    context.set_default_timeout(20_000)
    pg = context.new_page()
    errors = PageErrors()
    pg.on("console", errors.console)
    pg.on("pageerror", errors.page_error)
    pg.errors = errors
    yield pg
    context.close()
    assert not errors.errors, "browser errors:\n" + "\n".join(errors.errors)


@pytest.fixture
def shot(request):
    """shot(page, name): save a full-page screenshot as test-output/screenshots/<test>-<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    test = re.sub(r"[^A-Za-z0-9_-]+", "_", request.node.name)

    def take(pg, name: str) -> Path:
        path = SCREENSHOTS / f"{test}-{name}.png"
        pg.screenshot(path=str(path), full_page=True)
        return path

    return take


def sign_in(pg, base_url: str, username: str, password: str) -> None:
    pg.goto(f"{base_url}/login")
    pg.get_by_label("User name").fill(username)
    pg.get_by_label("Password").fill(password)
    pg.get_by_role("button", name="Sign in").click()
    pg.wait_for_url(re.compile(r".*/$"))
