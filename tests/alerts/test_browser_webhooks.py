"""The Webhooks page in headless Chromium: an admin adds an endpoint for two
event types, copies its secret (shown once), sees a delivery to it with its
status, and removes it. Each step saves a screenshot under
test-artifacts/screenshots/.
"""

from __future__ import annotations

import re

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from alerts.models import Channel, DeliveryAttempt, DeliveryStatus, Notification, WebhookEndpoint
from tests.browser import (  # noqa: F401
    browser_fixture,
    open_settings_page,
    page_fixture,
    screenshot,
    watch_csp,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_admin_adds_an_endpoint_sees_its_secret_once_and_a_delivery_then_removes_it(
    live_server, page: Page, owner
):
    csp_violations = watch_csp(page)
    open_settings_page(page, live_server.url, "Webhooks", "/settings/webhooks/")
    expect(page.get_by_text("No webhook endpoints yet")).to_be_visible()

    # A bad URL and no event: both refused in place, nothing stored.
    add = page.locator("#webhook-add")
    add.get_by_label("URL").fill("ftp://hooks.example.com/headroom")
    add.get_by_role("button", name="Add endpoint").click()
    expect(add.get_by_text("The URL must start with https:// or http://.")).to_be_visible()
    expect(add.get_by_text("Choose at least one event type.")).to_be_visible()
    screenshot(page, "webhooks-add-errors")
    assert not WebhookEndpoint.objects.exists()

    add.get_by_label("URL").fill("https://hooks.example.com/headroom")
    add.get_by_role("checkbox", name=re.compile(r"^alert\.triggered ")).check()
    add.get_by_role("checkbox", name=re.compile(r"^user_limit\.reached ")).check()
    add.get_by_role("button", name="Add endpoint").click()

    expect(page.get_by_role("status")).to_contain_text("Endpoint added.")
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.events == ["alert.triggered", "user_limit.reached"]
    secret = page.get_by_label("Signing secret")
    expect(secret).to_have_value(endpoint.secret)
    expect(page.get_by_text("It will not be shown again")).to_be_visible()
    row = page.locator(f"#webhook-endpoint-{endpoint.pk}")
    expect(row).to_contain_text("https://hooks.example.com/headroom")
    expect(row).to_contain_text("alert.triggered")
    expect(row).to_contain_text("user_limit.reached")
    expect(row).to_contain_text("Enabled")
    # The form is fresh again, ready for another endpoint.
    expect(add.get_by_label("URL")).to_have_value("")
    screenshot(page, "webhooks-secret-shown-once")

    # A message was sent to it, the second attempt succeeding.
    notification = Notification.objects.create(
        organization=owner.organization,
        group_key="browser",
        channel=Channel.WEBHOOK,
        recipient=str(endpoint.pk),
        event_type="alert.triggered",
        status=DeliveryStatus.SENT,
        attempts=2,
        sent_at=timezone.now(),
    )
    DeliveryAttempt.objects.create(notification=notification, response_status=502)
    DeliveryAttempt.objects.create(notification=notification, response_status=200, succeeded=True)
    page.reload()

    expect(page.get_by_label("Signing secret")).to_have_count(0)
    expect(page.get_by_text(endpoint.secret)).to_have_count(0)
    delivered = page.locator(f"#webhook-delivery-{notification.pk}")
    expect(delivered).to_contain_text("https://hooks.example.com/headroom")
    expect(delivered).to_contain_text("alert.triggered")
    expect(delivered).to_contain_text("Sent")
    expect(delivered.locator("td").nth(3)).to_have_text("2")
    expect(delivered.locator("td").nth(4)).to_have_text("200")
    screenshot(page, "webhooks-delivery")

    # Remove, after confirming in the dialog.
    row.get_by_role("link", name="Remove https://hooks.example.com/headroom").click()
    dialog = page.get_by_role("dialog", name="Remove endpoint")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Remove the endpoint https://hooks.example.com/headroom?")
    screenshot(page, "webhooks-remove-dialog")
    dialog.get_by_role("button", name="Remove").click()

    expect(dialog).to_be_hidden()
    expect(page.get_by_role("status")).to_contain_text(
        "Endpoint https://hooks.example.com/headroom removed."
    )
    expect(page.get_by_text("No webhook endpoints yet")).to_be_visible()
    expect(delivered).to_contain_text("Removed endpoint")
    screenshot(page, "webhooks-removed")
    assert not WebhookEndpoint.objects.exists()
    assert csp_violations == []
