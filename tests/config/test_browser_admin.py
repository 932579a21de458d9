"""The Django admin's biggest lists in Chromium at 1280 px, with rows like real ones.

Each list is screenshotted (test-artifacts/screenshots/admin-*.png) and
measured: the table fits the page, and no row wraps into a tall one.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal as D

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from accounts.models import AuditEvent, User
from alerts.models import (
    Channel,
    DeliveryAttempt,
    DeliveryStatus,
    Firing,
    FiringKind,
    Notification,
    WebhookEndpoint,
)
from alerts.services.configuration import alert_create
from alerts.services.ingest import UsageInput, usage_ingest
from tests.browser import browser_fixture, page_fixture, screenshot  # noqa: F401
from tests.factories import AdminMembershipFactory, MembershipFactory, OrganizationFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

STAFF_EMAIL = "platform.operations@headroom.test"
STAFF_PASSWORD = "staff-password"

# Changelist: (screenshot name, URL path).
LISTS = [
    ("organizations", "/admin/accounts/organization/"),
    ("memberships", "/admin/accounts/membership/"),
    ("usage-events", "/admin/billing/usageevent/"),
    ("firings", "/admin/alerts/firing/"),
    ("notifications", "/admin/alerts/notification/"),
    ("delivery-attempts", "/admin/alerts/deliveryattempt/"),
    ("webhook-endpoints", "/admin/alerts/webhookendpoint/"),
    ("audit-events", "/admin/accounts/auditevent/"),
]

# A one-line row is about 35 px high, each more line 16 px: the longest values
# here (72-character emails, 60-character keys) may take three lines, no more.
MAX_ROW_HEIGHT = 85


def _seed() -> None:
    """A few rows in every list, with the long values real ones have."""
    now = timezone.now()
    for index, (slug, name) in enumerate(
        [
            ("acme-international-holdings", "Acme International Holdings Incorporated"),
            ("globex-research-and-development", "Globex Research and Development Division"),
            ("initech", "Initech"),
        ]
    ):
        organization = OrganizationFactory(
            slug=slug, name=name, credit_allowance=D(125000) if index else D("1234.5")
        )
        owner = AdminMembershipFactory(
            organization=organization,
            user__email=f"alexandra.konstantinopoulou@{slug}.example.com",
            user__name="Alexandra Konstantinopoulou",
            name="Alexandra Konstantinopoulou",
        )
        members = [
            MembershipFactory(
                organization=organization,
                user__email=f"member.number.{number}@{slug}.example.com",
                external_id=f"user_{slug}_{number:04d}",
            )
            for number in range(3)
        ]
        alert_create(
            organization=organization,
            threshold_type="percentage",
            threshold=D(1),
            notify="all_admins",
        )
        usage_ingest(
            organization=organization,
            events=[
                UsageInput(
                    f"evt_{slug}_{number:04d}_7f3c9a2e-5b1d-4c8e-9f0a-1b2c3d4e5f6a",
                    D("2500.125"),
                    user=member.external_id,
                )
                for number, member in enumerate(members)
            ],
        )
        # The history and the outbox as alerts leave them (written here, not
        # by the evaluation task, which the tests' settings do not run).
        for number, member in enumerate(members):
            firing = Firing.objects.create(
                organization=organization,
                kind=FiringKind.USER_LIMIT if number else FiringKind.ORGANIZATION_ALERT,
                membership=member if number else None,
                user_external_id=member.external_id if number else "",
                threshold_type="percentage",
                threshold=D(80),
                threshold_credits=D("100000.5"),
                value=D("100250.125"),
                allowance=D(125000),
                period_start=now - timedelta(days=2),
                period_end=now + timedelta(days=28),
                dedupe_key=f"organization_alert:{organization.pk}:{number}:2026-12-01T00:00:00",
            )
            notification = Notification.objects.create(
                organization=organization,
                group_key=f"evaluation-{organization.pk}-{number}",
                channel=Channel.EMAIL,
                recipient=owner.user.email,
                event_type="user_limit.reached" if number else "alert.fired",
                status=DeliveryStatus.SENT,
                attempts=1,
                sent_at=now,
            )
            notification.firings.add(firing)
        WebhookEndpoint.objects.create(
            organization=organization,
            url=f"https://hooks.{slug}.example.com/integrations/headroom/credit-usage-events",
            secret="whsec_0123456789abcdef",
            events=["alert.fired", "user_limit.reached", "user_alert.fired"],
        )
        AuditEvent.objects.create(
            organization=organization,
            actor_user=owner.user,
            actor=owner.user.email,
            action="organization_alert.created",
            target_type="organization_alert",
            target_id="1234567",
        )
    for notification in Notification.objects.all():
        DeliveryAttempt.objects.create(
            notification=notification,
            started_at=now - timedelta(seconds=5),
            finished_at=now,
            succeeded=True,
            response_status=202,
            provider_message_id=f"<0100018c2b3a4d5e-{notification.pk:08d}@email.amazonses.com>",
        )


def _log_in_as_staff(page: Page, base_url: str) -> None:
    User.objects.create_superuser(STAFF_EMAIL, STAFF_PASSWORD)
    page.goto(f"{base_url}/admin/login/")
    page.get_by_label("Email").fill(STAFF_EMAIL)
    page.get_by_label("Password").fill(STAFF_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("link", name="Headroom administration")).to_be_visible()


def test_the_biggest_lists_are_readable_at_1280_px(live_server, page: Page):
    _seed()
    _log_in_as_staff(page, live_server.url)

    problems = []
    for name, path in LISTS:
        page.goto(f"{live_server.url}{path}")
        rows = page.locator("#result_list tbody tr")
        expect(rows.first).to_be_visible()
        assert rows.count() >= 3, name
        screenshot(page, f"admin-{name}")
        measured = page.evaluate(
            """() => {
                const table = document.querySelector('#result_list');
                const rows = [...table.querySelectorAll('tbody tr')];
                return {
                    tableRight: table.getBoundingClientRect().right,
                    pageWidth: document.documentElement.clientWidth,
                    scrollWidth: document.documentElement.scrollWidth,
                    tallest: Math.max(...rows.map(row => row.getBoundingClientRect().height)),
                };
            }"""
        )
        if measured["scrollWidth"] > measured["pageWidth"]:
            problems.append(f"{name}: the page scrolls sideways ({measured})")
        if measured["tableRight"] > measured["pageWidth"]:
            problems.append(f"{name}: the table overflows ({measured})")
        if measured["tallest"] > MAX_ROW_HEIGHT:
            problems.append(f"{name}: a row wraps into {measured['tallest']:.0f} px")

    assert not problems, "\n".join(problems)
