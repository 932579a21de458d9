"""Under the Content Security Policy every page still works in Chromium:
no violation is reported while the pages and their scripts run.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.browser import browser_fixture, log_in, page_fixture, watch_csp  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_no_csp_violation_on_the_pages(live_server, page: Page, owner):
    violations = watch_csp(page)
    log_in(page, live_server.url, "owner@acme.test")

    page.get_by_role("button", name="Add alert").click()
    dialog = page.get_by_role("dialog", name="Add alert")
    dialog.get_by_label("Specific Admins").check()
    dialog.get_by_label("Admins", exact=True).fill("own")
    expect(dialog.get_by_role("option").first).to_be_visible()
    page.goto(f"{live_server.url}/usage/")
    expect(page.get_by_role("heading", name="Monitor usage", level=1)).to_be_visible()
    page.goto(f"{live_server.url}/me/usage/")
    page.goto(f"{live_server.url}/api/v1/docs")
    expect(page.locator(".swagger-ui")).to_be_visible()

    assert violations == []
