"""The emails of the credit balance (SPEC §9), each set off the way it is in
use and delivered: the three credit notices (credits added by auto top-up,
credits expiring, the top-up limit reached) and the three balance alerts
(depleted, dropped, recovered). Each says what happened in its subject and
both parts, and leads to Manage credits (/credits/); every link starts with
SITE_URL.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest
from django.core import mail
from django.utils import timezone

from accounts.models import Organization
from alerts.services.credit_settings import (
    AutoTopUpInput,
    auto_top_up_set,
    balance_alert_create,
)
from alerts.services.credits import credit_balances_check
from billing.models import CreditGrant, GrantKind
from tests.helpers import credit_grant as grant
from tests.helpers import ingest

SITE = "http://127.0.0.1:8765"
URL = re.compile(r"https?://[^\s\"'<>]+")
# Set to a directory to keep each email's HTML there (to look at it in a browser).
KEEP_HTML = os.environ.get("HEADROOM_KEEP_EMAIL_HTML")


@pytest.fixture(autouse=True)
def site_url(settings):
    settings.SITE_URL = SITE


@pytest.fixture
def admins(organization, owner, member):
    """The organization has no allowance: its balance is its grants. Two
    people, one admin: only the owner is emailed.
    """
    return [owner]


def top_up(organization: Organization, **fields: Any) -> None:
    auto_top_up_set(
        organization=organization,
        settings=AutoTopUpInput(
            enabled=True, threshold=D(50), credits=D(200), **{"max_per_period": 3, **fields}
        ),
    )


def the_email(request) -> tuple[Any, str, str]:
    """The one email sent: it, its text and its HTML (kept if asked)."""
    (message,) = mail.outbox
    (html, mimetype) = message.alternatives[0]
    assert mimetype == "text/html"
    if KEEP_HTML:
        Path(KEEP_HTML).mkdir(parents=True, exist_ok=True)
        Path(KEEP_HTML, f"{request.node.name}.html").write_text(html)
        Path(KEEP_HTML, f"{request.node.name}.txt").write_text(
            f"Subject: {message.subject}\n\n{message.body}"
        )
    return message, message.body, html


def assert_leads_to_manage_credits(text: str, html: str) -> None:
    assert f"Manage credits: {SITE}/credits/" in text
    assert f'href="{SITE}/credits/"' in html
    assert ">Manage credits</a>" in html
    for part in (text, html):
        assert "/settings/limits/" not in part
        links = URL.findall(part)
        assert links and all(link.startswith(f"{SITE}/") for link in links), links


def assert_says(text: str, html: str, *sentences: str) -> None:
    for sentence in sentences:
        assert sentence in text, text
        assert sentence in html, html


# Credit notices


def test_credits_added_by_auto_top_up(request, organization, admins, deliver):
    grant(organization, "100")
    top_up(organization, expires_after_days=30)

    deliver(ingest, organization, 60)  # 100 -> 40: below 50

    message, text, html = the_email(request)
    assert message.to == ["owner@acme.test"]
    assert message.subject == "[Acme Inc] Auto top-up added 200 credits"
    expires_at = CreditGrant.objects.get(kind=GrantKind.TOP_UP).expires_at
    assert_says(
        text,
        html,
        "Auto top-up added 200 credits",
        "The credit balance fell below the auto top-up threshold, so 200 credits were added "
        f"in a top-up grant. They expire on {expires_at:%b} {expires_at.day}, {expires_at.year}",
    )
    assert "credit_grant.created" not in text + html  # webhook jargon is for the host, not admins
    assert_leads_to_manage_credits(text, html)


def test_credits_expiring(request, organization, admins, deliver):
    expires_at = timezone.now() + timedelta(days=3)
    grant(organization, "100", expires_at=expires_at)
    ingest(organization, 25)
    mail.outbox.clear()

    deliver(credit_balances_check, now=timezone.now() + timedelta(minutes=1))

    message, text, html = the_email(request)
    assert message.subject == f"[Acme Inc] 75 credits expire on {expires_at:%b} {expires_at.day}"
    assert_says(
        text,
        html,
        f"75 credits left in a grant expire on {expires_at:%b} {expires_at.day}, {expires_at.year}",
        "Credits not used by then are gone.",
    )
    assert_leads_to_manage_credits(text, html)


def test_the_top_up_limit_reached(request, organization, admins, deliver):
    grant(organization, "100")
    top_up(organization, max_per_period=1)
    deliver(ingest, organization, 60)  # the one top-up: 40 + 200 = 240
    mail.outbox.clear()

    deliver(ingest, organization, 200)  # 240 -> 40: below 50 again, no top-up left

    message, text, html = the_email(request)
    assert message.subject == "[Acme Inc] Auto top-up reached its limit for this billing period"
    assert_says(
        text,
        html,
        "auto top-up has added credits 1 time this billing period, the most it may.",
        "It will not add more until the next billing period",
    )
    assert_leads_to_manage_credits(text, html)


# Balance alerts


def test_the_balance_dropped_below_a_threshold(request, organization, admins, deliver):
    grant(organization, "100")
    balance_alert_create(organization=organization, alert_type="dropped", threshold=D(50))

    deliver(ingest, organization, 60)

    message, text, html = the_email(request)
    assert message.subject == "[Acme Inc] The credit balance dropped below 50 credits"
    assert_says(text, html, "The credit balance dropped below 50 credits")
    assert "Credit balance now: 40 credits" in text
    assert "Threshold: 50 credits" in text
    assert_leads_to_manage_credits(text, html)


def test_the_balance_depleted(request, organization, admins, deliver):
    grant(organization, "100")
    balance_alert_create(organization=organization, alert_type="depleted")

    deliver(ingest, organization, 130)

    message, text, html = the_email(request)
    assert message.subject == "[Acme Inc] The credit balance is used up"
    assert_says(text, html, "The credit balance is used up")
    assert "Credit balance now: 0 credits" in text
    assert_leads_to_manage_credits(text, html)


def test_the_balance_recovered(request, organization, admins, deliver):
    grant(organization, "10")
    ingest(organization, 10)
    balance_alert_create(organization=organization, alert_type="recovered")

    deliver(grant, organization, "500")

    message, text, html = the_email(request)
    assert message.subject == "[Acme Inc] Credits are available again"
    assert_says(text, html, "Credits are available again")
    assert "Credit balance now: 500 credits" in text
    assert_leads_to_manage_credits(text, html)


def test_two_balance_alerts_crossed_at_once_name_the_change_not_usage(
    request, organization, admins, deliver
):
    grant(organization, "100")
    balance_alert_create(organization=organization, alert_type="dropped", threshold=D(50))
    balance_alert_create(organization=organization, alert_type="depleted")

    deliver(ingest, organization, 100)

    message, text, html = the_email(request)
    assert message.subject == "[Acme Inc] The credit balance is used up (and 1 more alert)"
    assert_says(text, html, "Also crossed by the same change", "dropped below 50 credits")
    assert "by the same usage" not in text + html
    assert_leads_to_manage_credits(text, html)
