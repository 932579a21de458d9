"""The Limits & Alerts page in headless Chromium: an admin adds, edits and
deletes an organization alert, configures per-user alerts and limits with a
custom Unlimited limit, and sees an over-budget member. Each step saves a
screenshot under test-artifacts/screenshots/.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from playwright.sync_api import Page, expect

from alerts.models import OrganizationAlert, UserAlertPolicy
from alerts.services.ingest import UsageInput, usage_ingest
from billing.models import CustomLimit, UserLimitPolicy
from tests.browser import browser_fixture, log_in, page_fixture, screenshot  # noqa: F401
from tests.factories import AdminMembershipFactory, MembershipFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def team(owner, member):
    """An organization with an allowance, a second admin and a few members with usage."""
    organization = owner.organization
    organization.credit_allowance = Decimal(1000)
    organization.save()
    owner.user.name = "Olivia Owner"
    owner.user.save()
    grace = AdminMembershipFactory(
        organization=organization, user__name="Grace Hopper", user__email="grace@acme.test"
    )
    alan = MembershipFactory(
        organization=organization, user__name="Alan Turing", user__email="alan@acme.test"
    )
    usage_ingest(
        organization=organization,
        events=[
            UsageInput(idempotency_key="a", credits=Decimal(300), user=alan.external_id),
            UsageInput(idempotency_key="m", credits=Decimal(120), user=member.external_id),
        ],
    )
    return {"owner": owner, "grace": grace, "alan": alan, "member": member}


def open_limits_page(page: Page, base_url: str) -> None:
    log_in(page, base_url, "owner@acme.test")
    expect(page).to_have_url(f"{base_url}/settings/limits/")


def pick(page: Page, scope, label: str, search: str, option: str) -> None:
    """Choose someone in a member picker by typing and clicking the match."""
    box = scope.get_by_label(label, exact=True)
    box.fill(search)
    scope.get_by_role("option", name=option).click()


def test_admin_adds_edits_and_deletes_an_organization_alert(live_server, page: Page, team):
    open_limits_page(page, live_server.url)
    alerts = page.locator("#organization-alerts")
    expect(alerts.get_by_text("No organization alerts yet")).to_be_visible()

    # Add: 35% of the allowance, to Grace only. 420 used: it fires at once.
    page.get_by_role("button", name="Add alert").click()
    dialog = page.get_by_role("dialog", name="Add alert")
    expect(dialog).to_be_visible()
    dialog.get_by_label("Percentage").check()
    dialog.get_by_label("Threshold", exact=True).fill("35")
    expect(dialog.get_by_label("Admins", exact=True)).to_be_hidden()
    dialog.get_by_label("Specific Admins").check()
    pick(page, dialog, "Admins", "grac", "Grace Hopper grace@acme.test · Admin")
    expect(dialog.get_by_role("button", name="Remove Grace Hopper")).to_be_visible()
    screenshot(page, "limits-add-alert-dialog")
    dialog.get_by_role("button", name="Add").click()

    expect(dialog).to_be_hidden()
    expect(page.get_by_role("status")).to_contain_text("Alert added.")
    row = alerts.locator("tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("35%")
    expect(row).to_contain_text("350 credits")
    expect(row).to_contain_text("Grace Hopper")
    expect(row).to_contain_text("In alarm")
    expect(page.locator("#alert-history")).to_contain_text("Organization alert")
    screenshot(page, "limits-alert-added")

    # A bad edit shows its error in the dialog and keeps it open.
    row.get_by_role("button", name="Edit alert").click()
    dialog = page.get_by_role("dialog", name="Edit alert")
    expect(dialog.get_by_text("Changing the threshold resets this alert")).to_be_visible()
    dialog.get_by_label("Threshold", exact=True).fill("150")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog.get_by_text("A percentage threshold must be between 1 and 100.")).to_be_visible()
    screenshot(page, "limits-edit-alert-error")

    # Edit: 500 absolute credits, to all admins. Not yet reached: OK again.
    dialog.get_by_label("Absolute").check()
    dialog.get_by_label("Threshold", exact=True).fill("500")
    dialog.get_by_label("All Admins").check()
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    expect(row).to_contain_text("500")
    expect(row).to_contain_text("All Admins")
    expect(row).to_contain_text("OK")
    alert = OrganizationAlert.objects.get()
    assert (alert.threshold_type, alert.threshold, alert.notify) == ("absolute", 500, "all_admins")

    # Delete, after confirming.
    row.get_by_role("button", name="Delete alert").click()
    confirm = page.get_by_role("dialog", name="Delete alert")
    expect(confirm).to_contain_text("Delete the alert at 500 credits?")
    screenshot(page, "limits-delete-alert")
    confirm.get_by_role("button", name="Delete").click()
    expect(alerts.get_by_text("No organization alerts yet")).to_be_visible()
    expect(page.get_by_role("status")).to_contain_text("Alert deleted.")
    assert not OrganizationAlert.objects.exists()


def test_the_add_dialog_is_usable_with_the_keyboard(live_server, page: Page, team):
    open_limits_page(page, live_server.url)

    page.get_by_role("button", name="Add alert").focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Add alert")
    expect(dialog).to_be_visible()
    dialog.get_by_label("Specific Admins").check()
    box = dialog.get_by_label("Admins", exact=True)
    box.focus()
    box.press_sequentially("gr")
    expect(
        dialog.get_by_role("option", name="Grace Hopper grace@acme.test · Admin")
    ).to_be_visible()
    box.press("ArrowDown")
    box.press("Enter")
    expect(dialog.get_by_role("button", name="Remove Grace Hopper")).to_be_visible()
    page.keyboard.press("Escape")

    expect(dialog).to_be_hidden()
    assert not OrganizationAlert.objects.exists()


def test_admin_configures_per_user_alerts_and_limits(live_server, page: Page, team):
    open_limits_page(page, live_server.url)

    # Credit Usage Alerts: on at 100 credits, tell the member and Grace.
    section = page.locator("#credit-usage-alerts")
    section.get_by_label("Credit Usage Alerts").check()
    section.get_by_label("Credit Alert Threshold").fill("100")
    section.get_by_label("Notify the user who triggered the alert").check()
    pick(page, section, "Admins to Notify", "Grace", "Grace Hopper grace@acme.test · Admin")
    section.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_contain_text("Credit usage alerts saved.")
    policy = UserAlertPolicy.objects.get()
    assert (policy.enabled, policy.threshold, policy.notify_user) == (True, 100, True)
    assert [m.user.name for m in policy.admins.all()] == ["Grace Hopper"]
    # Alan (300) and the member (120) were already past it: both fired.
    expect(page.locator("#alert-history tbody tr")).to_have_count(2)

    # Per-User Credit Limits: 250 each; workflows excluded.
    limits = page.locator("#per-user-limits")
    limits.get_by_label("Per-User Credit Limits").check()
    limits.get_by_label("Default Limit Per User").fill("250")
    limits.get_by_label("Exclude Workflows from Credit Limits").check()
    limits.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_contain_text("Per-user credit limits saved.")
    policy_limits = UserLimitPolicy.objects.get()
    assert (policy_limits.enabled, policy_limits.default_limit) == (True, 250)
    assert policy_limits.excluded_sources == ["workflow"]

    # Alan is over 250: he is in Users Exceeding Credit Budget.
    exceeding = page.locator("#users-exceeding")
    expect(exceeding.locator("tbody tr")).to_have_count(1)
    expect(exceeding).to_contain_text("Alan Turing")
    expect(exceeding).to_contain_text("300")
    expect(exceeding).to_contain_text("250")
    screenshot(page, "limits-user-exceeding")

    # A custom Unlimited limit for Alan takes him off the list.
    limits.get_by_role("button", name="Add Custom Limit").click()
    panel = page.locator("#add-custom-limit")
    pick(page, panel, "User", "alan", "Alan Turing alan@acme.test")
    panel.get_by_label("Unlimited").check()
    screenshot(page, "limits-add-custom-limit")
    panel.get_by_role("button", name="Add").click()
    expect(page.get_by_role("status")).to_contain_text("Custom limit set for Alan Turing.")
    custom = page.locator("#custom-limits tbody tr")
    expect(custom).to_have_count(1)
    expect(custom).to_contain_text("Unlimited")
    expect(exceeding.get_by_text("No member has reached their limit")).to_be_visible()
    assert CustomLimit.objects.get().limit is None

    # Edit it to 200: he is over budget again.
    custom.get_by_role("button", name="Edit custom limit of Alan Turing").click()
    dialog = page.get_by_role("dialog", name="Edit custom limit")
    dialog.get_by_label("Unlimited").uncheck()
    dialog.get_by_label("Credit Limit").fill("200")
    dialog.get_by_role("button", name="Save").click()
    expect(custom).to_contain_text("200")
    expect(exceeding).to_contain_text("Alan Turing")
    screenshot(page, "limits-and-alerts-configured")

    # Remove it: the default (250) applies, and he is still over it.
    custom.get_by_role("button", name="Remove custom limit of Alan Turing").click()
    page.get_by_role("dialog", name="Remove custom limit").get_by_role(
        "button", name="Remove"
    ).click()
    expect(page.locator("#custom-limits").get_by_text("No custom limits")).to_be_visible()
    assert not CustomLimit.objects.exists()

    # Everything saved shows again after a reload.
    page.reload()
    expect(page.locator("#credit-usage-alerts").get_by_label("Credit Usage Alerts")).to_be_checked()
    expect(
        page.locator("#credit-usage-alerts").get_by_label("Credit Alert Threshold")
    ).to_have_value("100")
    expect(limits.get_by_label("Default Limit Per User")).to_have_value("250")
    expect(limits.get_by_label("Exclude Workflows from Credit Limits")).to_be_checked()
    screenshot(page, "limits-and-alerts-full")


def test_the_page_is_readable_on_a_phone(live_server, page: Page, team):
    page.set_viewport_size({"width": 390, "height": 844})
    open_limits_page(page, live_server.url)

    expect(page.get_by_role("heading", name="Limits & Alerts", level=1)).to_be_visible()
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    screenshot(page, "limits-and-alerts-phone")
