"""Alerts inherited from the plan on Limits & Alerts, in headless Chromium
(SPEC §12): marked as coming from the plan, with no Delete; an admin turns
one off and on, changes it (it becomes this organization's), and resets it
to the plan's. Screenshots under test-artifacts/screenshots/.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from playwright.sync_api import Page, expect

from accounts.plans import plan_create
from alerts.models import OrganizationAlert
from alerts.services.changes import organization_update
from alerts.services.configuration import alert_create
from alerts.services.plan_alerts import plan_alert_create
from tests.browser import browser_fixture, log_in, page_fixture, screenshot  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def on_team(owner):
    organization = owner.organization
    team = plan_create(key="team", name="Team", credit_allowance=Decimal(1000))
    organization_update(organization=organization, plan=team)
    plan_alert_create(plan=team, threshold_type="percentage", threshold=Decimal(90))
    alert_create(organization=organization, threshold_type="absolute", threshold=Decimal(500))
    return OrganizationAlert.objects.get(organization=organization, plan_alert__isnull=False)


def test_an_admin_turns_off_changes_and_resets_an_inherited_alert(live_server, page: Page, on_team):
    log_in(page, live_server.url, "owner@acme.test")
    expect(page).to_have_url(f"{live_server.url}/settings/limits/")
    alerts = page.locator("#organization-alerts")
    inherited = alerts.locator(f"#alert-{on_team.pk}")
    own = alerts.locator("tbody tr").filter(has_text="500")
    expect(inherited).to_contain_text("From the Team plan")
    expect(inherited.get_by_role("button", name="Delete alert")).to_have_count(0)
    expect(own.get_by_role("button", name="Delete alert")).to_be_visible()
    screenshot(page, "plan-alerts-inherited")

    inherited.get_by_role("button", name="Turn off").click()
    expect(page.get_by_role("status")).to_contain_text("Alert turned off.")
    inherited = alerts.locator(f"#alert-{on_team.pk}")
    expect(inherited).to_contain_text("Off")
    expect(inherited).to_contain_text("Team plan, changed here")
    expect(inherited.get_by_role("button", name="Reset to the plan's")).to_be_visible()
    screenshot(page, "plan-alerts-turned-off")

    inherited.get_by_role("button", name="Reset to the plan's").click()
    expect(page.get_by_role("status")).to_contain_text("Alert reset to the plan's.")
    inherited = alerts.locator(f"#alert-{on_team.pk}")
    expect(inherited).to_contain_text("From the Team plan")
    expect(inherited).to_contain_text("OK")

    inherited.get_by_role("button", name="Edit alert").click()
    dialog = page.get_by_role("dialog", name="Edit alert")
    expect(dialog.get_by_text("This alert comes from the Team plan.")).to_be_visible()
    screenshot(page, "plan-alerts-edit-dialog")
    dialog.get_by_label("Threshold", exact=True).fill("75")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    inherited = alerts.locator(f"#alert-{on_team.pk}")
    expect(inherited).to_contain_text("75%")
    expect(inherited).to_contain_text("Team plan, changed here")
    on_team.refresh_from_db()
    assert (on_team.source, on_team.threshold, on_team.enabled) == (
        "plan_override",
        Decimal(75),
        True,
    )
    screenshot(page, "plan-alerts-changed-here")
