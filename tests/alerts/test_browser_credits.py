"""Manage credits in headless Chromium: an admin opens it from the sidebar,
sees the balance and the grants, adds a Dropped below alert with a
threshold, turns Auto Top-Up on and saves; a member blocked by a used-up
balance sees the notice on /assistant/. Each step saves a screenshot under
test-artifacts/screenshots/.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from alerts.models import BalanceAlert
from alerts.services.credits import credit_grant_create
from billing.models import AutoTopUp
from billing.services.grants import GrantInput
from tests.browser import (  # noqa: F401
    browser_fixture,
    log_in,
    open_settings_page,
    page_fixture,
    screenshot,
    watch_csp,
)
from tests.helpers import spend

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

D = Decimal


@pytest.fixture
def credits(organization, owner, member):
    """Acme: 1,000 credits a period, blocking, two grants, 1,100 used."""
    organization.credit_allowance = D(1000)
    organization.block_when_exhausted = True
    organization.save()
    credit_grant_create(
        organization=organization,
        grant=GrantInput(kind="purchased", credits=D(2500), note="Invoice 1042"),
    )
    credit_grant_create(
        organization=organization,
        grant=GrantInput(
            kind="promotional",
            credits=D(300),
            priority=10,
            expires_at=timezone.now() + timedelta(days=20),
        ),
    )
    spend(member, 1100)  # the allowance, then 100 of the promotional grant (drawn first)


def test_admin_sees_the_balance_adds_a_dropped_below_alert_and_turns_on_auto_top_up(
    live_server, page: Page, credits, organization
):
    csp_violations = watch_csp(page)
    log_in(page, live_server.url, "owner@acme.test")
    usage_nav = page.get_by_role("list", name="Usage")
    usage_nav.get_by_role("link", name="Manage credits").click()
    expect(page).to_have_url(f"{live_server.url}/credits/")
    expect(page.get_by_role("heading", name="Manage credits", level=1)).to_be_visible()

    balance = page.locator("#credit-balance")
    expect(balance.locator(".balance-figure")).to_have_text("2,700 credits")
    expect(balance).to_contain_text("Allowance left this period")
    expect(balance).to_contain_text("0 of 1,000")
    expect(balance).to_contain_text("2,700 credits")  # grants remaining
    grants = page.locator("#credit-grants")
    expect(grants.locator("tbody tr")).to_have_count(2)
    expect(grants.locator("tbody tr").first).to_contain_text("Promotional")
    expect(grants.locator("tbody tr").first).to_contain_text("200")
    expect(grants.locator("tbody tr").nth(1)).to_contain_text("Invoice 1042")
    expect(grants).to_contain_text("cannot be added on this page")
    expect(page.locator("#credit-ledger")).to_contain_text("Drawdown")
    screenshot(page, "credits-page")

    # A Dropped below alert: the threshold shows only for that type, and is required.
    page.get_by_role("button", name="Add balance alert").click()
    dialog = page.get_by_role("dialog", name="Add balance alert")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_label("Threshold")).to_be_hidden()
    dialog.get_by_label("Dropped below").check()
    expect(dialog.get_by_label("Threshold")).to_be_visible()
    dialog.get_by_role("button", name="Add").click()
    expect(dialog.get_by_text("needs a threshold greater than 0")).to_be_visible()
    screenshot(page, "credits-alert-error")
    assert not BalanceAlert.objects.exists()

    dialog.get_by_label("Threshold").fill("1000")
    screenshot(page, "credits-alert-dialog")
    dialog.get_by_role("button", name="Add").click()

    expect(dialog).to_be_hidden()
    expect(page.get_by_role("status")).to_contain_text("Balance alert added.")
    alert = BalanceAlert.objects.get()
    assert (alert.type, alert.threshold) == ("dropped", D(1000))
    row = page.locator(f"#balance-alert-{alert.pk}")
    expect(row).to_contain_text("Dropped below")
    expect(row).to_contain_text("1,000")
    expect(row).to_contain_text("All Admins")
    expect(row).to_contain_text("Armed")

    # Auto Top-Up on, with its two main fields.
    top_up = page.locator("#auto-top-up")
    top_up.get_by_label("Auto Top-Up", exact=True).check()
    top_up.get_by_label("Top up when the balance falls below").fill("500")
    top_up.get_by_label("Top up by").fill("2000")
    top_up.get_by_role("button", name="Save").click()

    expect(page.get_by_role("status")).to_contain_text("Auto Top-Up saved.")
    expect(top_up).to_contain_text("0 of 3 top-ups made this billing period")
    expect(top_up.get_by_text("On", exact=True)).to_be_visible()
    setting = AutoTopUp.objects.get(organization=organization)
    assert (setting.enabled, setting.threshold, setting.credits) == (True, D(500), D(2000))
    screenshot(page, "credits-saved")
    assert csp_violations == []


def test_a_member_blocked_by_a_used_up_balance_sees_the_notice(
    live_server, page: Page, credits, organization, member
):
    spend(member, 2700)  # the rest of both grants
    log_in(page, live_server.url, "member@acme.test")
    page.goto(f"{live_server.url}/assistant/")

    page.get_by_label("Prompt").fill("One more question")
    page.get_by_role("button", name="Run assistant").click()

    notice = page.locator("#assistant-result").get_by_role("alert")
    expect(
        notice.get_by_role("heading", name="Your organization's credit balance is used up")
    ).to_be_visible()
    expect(notice).to_contain_text("0 credits left")
    expect(notice).to_contain_text("next period's allowance")
    expect(notice).to_contain_text("owner@acme.test")
    screenshot(page, "credits-member-blocked")

    page.goto(f"{live_server.url}/me/usage/")
    expect(page.locator("#organization-balance")).to_contain_text("Used up")
    screenshot(page, "credits-member-usage")
