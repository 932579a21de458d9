"""Headless Chromium through Playwright, for tests that drive real pages.

Use with pytest-django's `live_server`:

    from tests.browser import browser_fixture, page_fixture, screenshot  # noqa: F401

    @pytest.mark.browser
    def test_something(live_server, page):
        page.goto(live_server.url + "/accounts/login/")
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.factories import DEFAULT_PASSWORD

# Playwright's sync API runs an event loop in this thread; Django would
# otherwise refuse database access from the tests and fixtures around it.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"


# Each test module that imports `browser_fixture` gets its own session
# fixture, but Playwright's sync API runs one instance per thread: the first
# of them starts Chromium for the whole run, the others share it.
_running: dict[str, Browser] = {}


@pytest.fixture(scope="session", name="browser")
def browser_fixture() -> Iterator[Browser]:
    if "browser" in _running:
        yield _running["browser"]
        return
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        _running["browser"] = chromium
        try:
            yield chromium
        finally:
            del _running["browser"]
            chromium.close()


@pytest.fixture(name="page")
def page_fixture(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(10_000)
    page = context.new_page()
    yield page
    context.close()


def log_in(page: Page, base_url: str, email: str, *, next_path: str | None = None) -> None:
    """Log in through the login form as `email` (a factory user's password),
    going on to `next_path` when given.
    """
    page.goto(f"{base_url}/accounts/login/" + (f"?next={next_path}" if next_path else ""))
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(DEFAULT_PASSWORD)
    page.get_by_role("button", name="Log in").click()


def open_settings_page(page: Page, base_url: str, name: str, path: str) -> None:
    """Log in as the owner (owner@acme.test) and follow the sidebar's link
    `name` to the settings page at `path`, titled `name`.
    """
    log_in(page, base_url, "owner@acme.test")
    page.get_by_role("link", name=name).click()
    expect(page).to_have_url(f"{base_url}{path}")
    expect(page.get_by_role("heading", name=name, level=1)).to_be_visible()


def watch_csp(page: Page) -> list[str]:
    """The Content Security Policy violations the page's console reports, as they come."""
    violations: list[str] = []
    page.on(
        "console",
        lambda message: (
            violations.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    return violations


def screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot to test-artifacts/screenshots/<name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
