"""End to end with a real Celery worker on Redis and a local stand-in for
Postmark: usage over the billing threshold makes an invoice whose email
reaches each admin once (SPEC §11).
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from alerts.models import DeliveryStatus, Notification
from alerts.services.changes import organization_update
from alerts.services.invoicing import BillingThresholdInput, billing_threshold_set
from billing.models import Invoice
from tests.alerts.test_worker import provider, worker  # noqa: F401  (fixtures)
from tests.factories import AdminMembershipFactory
from tests.helpers import post_usage
from tests.stubs import wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_an_invoice_is_emailed_to_each_admin_once(api, organization, owner, provider, worker):  # noqa: F811
    second = AdminMembershipFactory(organization=organization)
    organization_update(organization=organization, credit_price=Decimal("0.25"))
    billing_threshold_set(
        organization=organization,
        settings=BillingThresholdInput(enabled=True, amount=Decimal(10)),
    )
    post_usage(api, {"idempotency_key": "a", "credits": 30}, status=202)
    post_usage(api, {"idempotency_key": "b", "credits": 20}, status=202)  # $12.50
    emails = provider.wait_for(2)
    assert sorted(email.json()["To"] for email in emails) == sorted(
        [owner.user.email, second.user.email]
    )
    message = emails[0].json()
    assert "Invoice for $12.50 issued" in message["Subject"]
    assert "50 credits" in message["TextBody"] and "$12.50" in message["HtmlBody"]
    invoice = Invoice.objects.get()
    assert (invoice.credits, invoice.amount) == (Decimal(50), Decimal("12.5"))
    wait_until(lambda: not Notification.objects.exclude(status=DeliveryStatus.SENT).exists())
    assert len(provider.accepted()) == 2
