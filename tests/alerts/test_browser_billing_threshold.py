"""Threshold invoicing and money alerts on Limits & Alerts, in headless
Chromium: an admin turns the Billing Threshold on with an amount (a bad one
first), usage past it makes an invoice that the section lists, and a Spend
alert is added with the currency shown. Screenshots under
test-artifacts/screenshots/.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from playwright.sync_api import Page, expect

from alerts.models import OrganizationAlert
from billing.models import BillingThreshold, Invoice
from tests.browser import (  # noqa: F401
    browser_fixture,
    log_in,
    page_fixture,
    screenshot,
    watch_csp,
)
from tests.helpers import spend

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

D = Decimal


@pytest.fixture
def priced(organization, owner, member):
    """Acme: 1,000 credits a period at €0.02 a credit, 900 used."""
    organization.credit_allowance = D(1000)
    organization.block_when_exhausted = False
    organization.credit_price = D("0.02")
    organization.currency = "EUR"
    organization.save()
    spend(member, 900)


def test_admin_sets_the_billing_threshold_and_sees_the_invoice(
    live_server, page: Page, priced, organization, member
):
    csp_violations = watch_csp(page)
    log_in(page, live_server.url, "owner@acme.test", next_path="/settings/limits/")
    section = page.locator("#billing-threshold")
    expect(section.get_by_role("heading", name="Billing Threshold")).to_be_visible()
    expect(section).to_contain_text("At €0.02 per credit (EUR)")
    expect(section).to_contain_text("No invoice yet this billing period.")

    section.get_by_label("Billing Threshold", exact=True).check()
    section.get_by_role("button", name="Save").click()
    expect(section.get_by_text("Say at which amount to invoice.")).to_be_visible()
    assert not BillingThreshold.objects.filter(enabled=True).exists()
    screenshot(page, "billing-threshold-error")

    section.get_by_label("Amount (€ EUR)").fill("5")
    section.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_contain_text("Billing threshold saved.")
    threshold = BillingThreshold.objects.get(organization=organization)
    assert (threshold.enabled, threshold.amount) == (True, D(5))

    spend(member, 360)  # 260 beyond the allowance: €5.20
    invoice = Invoice.objects.get()
    assert (invoice.credits, invoice.amount) == (D(260), D("5.2"))
    page.reload()
    row = page.locator(f"#invoice-{invoice.pk}")
    expect(row).to_contain_text("Threshold reached")
    expect(row).to_contain_text("260")
    expect(row).to_contain_text("€5.20")
    expect(section.get_by_label("Amount (€ EUR)")).to_have_value("5")
    section.scroll_into_view_if_needed()
    screenshot(page, "billing-threshold-invoice")

    # A Spend alert, in the currency.
    page.get_by_role("button", name="Add alert").click()
    dialog = page.get_by_role("dialog", name="Add alert")
    dialog.get_by_label("Spend (€)").check()
    expect(dialog).to_contain_text("an amount in EUR (€)")
    dialog.get_by_label("Threshold", exact=True).fill("50")
    screenshot(page, "money-alert-dialog")
    dialog.get_by_role("button", name="Add").click()
    expect(dialog).to_be_hidden()
    alert = OrganizationAlert.objects.get()
    assert (alert.threshold_type, alert.threshold) == ("spend", D(50))
    expect(page.locator(f"#alert-{alert.pk}")).to_contain_text("€50.00")
    screenshot(page, "money-alert-listed")
    assert csp_violations == []
