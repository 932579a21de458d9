"""The 404 page in Chromium, as a visitor meets it: styled, with a way home."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from tests.browser import browser_fixture, log_in, page_fixture, screenshot  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_lost_visitor_finds_the_way_home(live_server, page: Page, owner):
    log_in(page, live_server.url, "owner@acme.test")
    expect(page).to_have_url(f"{live_server.url}/settings/limits/")

    response = page.goto(f"{live_server.url}/no/such/page/")

    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", name="Page not found", level=1)).to_be_visible()
    # The site's stylesheet applied: the brand mark is the accent-coloured square of base.html.
    expect(page.locator(".brand-mark")).not_to_have_css("background-color", "rgba(0, 0, 0, 0)")
    screenshot(page, "error-404")
    page.get_by_role("link", name="Go to the home page").click()
    expect(page).to_have_url(f"{live_server.url}/settings/limits/")
