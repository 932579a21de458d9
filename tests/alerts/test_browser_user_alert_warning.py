"""In Chromium: the Credit Usage Alerts note updates as the threshold is
typed, and saving with "Notify at once" off tells nobody already past.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from alerts.models import Firing, UserAlertPolicy
from tests.browser import browser_fixture, log_in, page_fixture, screenshot  # noqa: F401
from tests.factories import MembershipFactory
from tests.helpers import ingest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_note_warns_before_saving_and_unticked_tells_nobody(live_server, page: Page, owner):
    organization = owner.organization
    for index, credits in enumerate([150, 12500, 40]):
        member = MembershipFactory(organization=organization, user__email=f"m{index}@acme.test")
        ingest(organization, credits, user=member, key=f"b{index}")
    log_in(page, live_server.url, "owner@acme.test")
    expect(page).to_have_url(f"{live_server.url}/settings/limits/")

    section = page.locator("#credit-usage-alerts")
    note = section.locator("#user-alerts-already-past")
    section.get_by_label("Credit Usage Alerts").check()
    section.get_by_label("Notify the user who triggered the alert").check()
    section.get_by_label("Credit Alert Threshold").fill("100")
    expect(note).to_contain_text("2 members are already past 100 credits this period")
    expect(note).to_contain_text("they will be emailed when you save.")
    section.get_by_label("Credit Alert Threshold").fill("10000")
    expect(note).to_contain_text("1 member is already past 10,000 credits this period")

    section.get_by_label("Notify at once if usage is already past this threshold").uncheck()
    expect(note).to_contain_text("they are not told this period")
    screenshot(page, "credit-usage-alerts-warning")
    section.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_contain_text("Credit usage alerts saved.")

    assert UserAlertPolicy.objects.get().threshold == 10000
    assert not Firing.objects.exists()
