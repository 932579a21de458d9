"""Limit-increase requests in Chromium (SPEC §14): a member at their limit
asks for more from the blocked notice; an admin approves it on Limits &
Alerts for this billing period; the member's next **Run assistant** works.
Screenshots under test-artifacts/screenshots/.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, Page, expect

from alerts.models import LimitRequest
from billing.models import CustomLimit
from tests.browser import browser_fixture, log_in, page_fixture, screenshot  # noqa: F401
from tests.helpers import limits_on, spend

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_member_asks_an_admin_approves_and_the_member_goes_on(
    live_server, page: Page, browser: Browser, organization, owner, member
):
    limits_on(organization, 100, admins=[owner])
    spend(member, 100)
    log_in(page, live_server.url, "member@acme.test")
    page.goto(f"{live_server.url}/assistant/")
    page.get_by_label("Prompt").fill("Draft the report")
    page.get_by_role("button", name="Run assistant").click()
    notice = page.locator("#assistant-result").get_by_role("alert")
    expect(notice.get_by_role("heading", name="You've reached your credit limit")).to_be_visible()

    notice.get_by_text("Request more credits").click()
    notice.get_by_label("Credits").fill("50")
    notice.get_by_label("Reason").fill("The quarterly report is due Friday")
    screenshot(page, "limit-request-form")
    notice.get_by_role("button", name="Send request").click()
    expect(page).to_have_url(f"{live_server.url}/me/usage/")
    expect(page.get_by_text("Your request was sent to your admins.")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("You asked for 50 more credits")
    expect(page.get_by_role("button", name="Withdraw request")).to_be_visible()
    screenshot(page, "limit-request-pending")

    admin = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    log_in(admin, live_server.url, "owner@acme.test")
    section = admin.locator("#limit-requests")
    row = section.locator("tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("member@acme.test")
    expect(row).to_contain_text("The quarterly report is due Friday")
    screenshot(admin, "limit-requests-section")
    row.get_by_role("button", name="Approve").click()
    dialog = admin.get_by_role("dialog", name="Approve request")
    expect(dialog.get_by_label("Credits")).to_have_value("50")
    dialog.get_by_label("For this billing period only").check()
    dialog.get_by_role("button", name="Approve").click()
    expect(admin.get_by_role("status")).to_contain_text("Request approved.")
    expect(section.get_by_text("No request waiting.")).to_be_visible()
    admin.context.close()

    assert CustomLimit.objects.get(membership=member).limit == 150
    assert LimitRequest.objects.get().this_period_only
    page.goto(f"{live_server.url}/assistant/")
    page.get_by_label("Prompt").fill("Draft the report")
    page.get_by_role("button", name="Run assistant").click()
    expect(
        page.locator("#assistant-result").get_by_role("heading", name="Assistant reply")
    ).to_be_visible()
    screenshot(page, "limit-request-approved-assistant")
