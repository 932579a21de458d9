"""Platform alerts end to end with a real Celery worker on Redis, Anymail's
Postmark backend and a local stand-in for Postmark (the fixtures of
test_worker.py): usage in over the API, one email per organization to the
alert's address out, through a provider that fails first; and the backfill
of an alert added while organizations are already past it, run by the
worker.
"""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from accounts.services import api_key_create
from alerts.models import DeliveryStatus, Notification
from alerts.platform_models import PlatformAlert, PlatformFiring
from alerts.services.changes import organization_update
from alerts.services.platform_config import platform_alert_save
from tests.alerts.test_worker import provider, worker  # noqa: F401  (the real worker's fixtures)
from tests.factories import AdminMembershipFactory, OrganizationFactory
from tests.fixtures import ApiClient
from tests.helpers import ingest, post_usage
from tests.stubs import wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

SALES = "sales@headroom.example"


def organizations(count: int) -> list:
    made = []
    for index in range(count):
        organization = OrganizationFactory(slug=f"customer-{index}", name=f"Customer {index}")
        AdminMembershipFactory(organization=organization)
        organization_update(organization=organization, credit_allowance=Decimal(100))
        made.append(organization)
    return made


def sales_alert() -> PlatformAlert:
    return platform_alert_save(
        alert=PlatformAlert(
            name="Outgrowing", threshold_type="percentage", threshold=Decimal(80), emails=[SALES]
        )
    )


def test_each_organization_crossing_emails_sales_once(provider, worker):  # noqa: F811
    provider.fail_next = 2  # the provider fails twice first: retried, nothing lost
    customers = organizations(3)
    sales_alert()
    for customer in customers:
        api = ApiClient(api_key_create(organization=customer)[1])
        for key in ("a", "b", "c"):  # 50, 100, 150: the second crosses 80
            post_usage(api, {"idempotency_key": key, "credits": 50}, status=202)

    emails = provider.wait_for(3, seconds=60)
    assert [email.json()["To"] for email in emails] == [SALES] * 3
    subjects = sorted(email.json()["Subject"] for email in emails)
    for index, subject in enumerate(subjects):
        assert f"Customer {index} reached 80% of its credit allowance" in subject
    assert all(email.json()["TextBody"] and email.json()["HtmlBody"] for email in emails)
    wait_until(lambda: not Notification.objects.exclude(status=DeliveryStatus.SENT).exists())
    time.sleep(1)  # nothing more arrives
    assert len(provider.accepted()) == 3
    assert PlatformFiring.objects.count() == 3


def test_an_alert_added_late_is_settled_by_the_worker(provider, worker):  # noqa: F811
    customers = organizations(2)
    ingest(customers[0], 90)
    ingest(customers[1], 10)

    alert = sales_alert()  # queues its backfill on commit

    (email,) = provider.wait_for(1, seconds=60)
    assert email.json()["To"] == SALES
    assert "Customer 0" in email.json()["Subject"]
    wait_until(lambda: PlatformAlert.objects.get(pk=alert.pk).settled_revision == alert.revision)
    assert [f.organization_id for f in PlatformFiring.objects.all()] == [customers[0].pk]
