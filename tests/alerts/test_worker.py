"""End to end with a real Celery worker on Redis, Anymail's Postmark backend
and a local stand-in for Postmark: usage in, emails and webhooks out.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from unittest import mock

import pytest
from celery.contrib.testing.worker import start_worker
from django.utils import timezone
from kombu.exceptions import OperationalError
from standardwebhooks.webhooks import Webhook

from alerts.delivery import notifications_requeue_stale
from alerts.models import DeliveryStatus, Notification
from alerts.services import alert_create
from alerts.webhooks import webhook_endpoint_create
from config.celery import app
from tests.factories import AdminMembershipFactory
from tests.stubs import postmark_stub, wait_until, webhook_receiver

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def provider(settings):
    with postmark_stub() as stub:
        settings.EMAIL_BACKEND = "anymail.backends.postmark.EmailBackend"
        settings.ANYMAIL = {"POSTMARK_SERVER_TOKEN": "test-token", "POSTMARK_API_URL": stub.url}
        settings.NOTIFICATION_RETRY_BASE_SECONDS = 0.2
        yield stub


@pytest.fixture
def worker():
    app.conf.task_always_eager = False
    app.control.purge()
    with start_worker(
        app, pool="threads", concurrency=2, perform_ping_check=False, shutdown_timeout=10
    ) as running:
        yield running


def ingest(api, key, credits, **extra):
    response = api.post(
        "/api/v1/usage", {"events": [{"idempotency_key": key, "credits": credits, **extra}]}
    )
    assert response.status_code == 202, response.content
    return response


def test_usage_crossing_a_threshold_emails_each_admin_once(
    api, organization, owner, provider, worker
):
    second = AdminMembershipFactory(organization=organization)
    alert_create(organization=organization, threshold_type="absolute", threshold=Decimal(100))
    ingest(api, "a", 60)
    ingest(api, "b", 60)
    ingest(api, "c", 60)
    emails = provider.wait_for(2)
    assert sorted(email.json()["To"] for email in emails) == sorted(
        [owner.user.email, second.user.email]
    )
    assert all(email.headers["x-postmark-server-token"] == "test-token" for email in emails)
    first = emails[0].json()
    assert "Organization usage reached 100 credits" in first["Subject"]
    assert first["TextBody"] and first["HtmlBody"]
    wait_until(lambda: not Notification.objects.exclude(status=DeliveryStatus.SENT).exists())
    assert all(n.provider_message_id for n in Notification.objects.all())
    assert len(provider.accepted()) == 2


def test_provider_failing_three_times_then_succeeding_delivers_exactly_once(
    api, organization, owner, provider, worker
):
    provider.fail_next = 3
    alert_create(organization=organization, threshold_type="absolute", threshold=Decimal(1))
    ingest(api, "a", 5)
    (email,) = provider.wait_for(1, seconds=60)
    assert email.json()["To"] == owner.user.email
    assert len(provider.received) == 4
    wait_until(lambda: Notification.objects.get().status == DeliveryStatus.SENT)
    notification = Notification.objects.get()
    assert notification.attempts == 4
    assert [a.succeeded for a in notification.delivery_attempts.all()] == [
        False,
        False,
        False,
        True,
    ]


def test_webhook_retried_with_the_same_id_and_signed(api, organization, owner, provider, worker):
    with webhook_receiver() as receiver:
        receiver.fail_next = 2
        endpoint, secret = webhook_endpoint_create(
            organization=organization, url=receiver.url + "hooks", events=["alert.triggered"]
        )
        alert = alert_create(
            organization=organization, threshold_type="absolute", threshold=Decimal(10)
        )
        ingest(api, "a", 10)
        (delivery,) = receiver.wait_for(1, seconds=60)
        assert len(receiver.received) == 3
        assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
        payload = Webhook(secret).verify(delivery.body, delivery.headers)
        assert payload["type"] == "alert.triggered"
        assert payload["data"]["organization"] == "acme"
        assert payload["data"]["alert_id"] == alert.pk
        assert (payload["data"]["threshold"], payload["data"]["value"]) == ("10", "10")
    assert endpoint.pk


def test_a_task_lost_while_redis_is_down_is_recovered_by_the_sweep(
    api, organization, owner, provider, worker
):
    alert_create(organization=organization, threshold_type="absolute", threshold=Decimal(1))
    with mock.patch(
        "alerts.tasks.deliver_notification.delay", side_effect=OperationalError("Redis is down")
    ):
        ingest(api, "a", 5)  # the write succeeds even though nothing could be queued
    notification = Notification.objects.get()
    assert notification.status == DeliveryStatus.PENDING
    assert provider.received == []
    assert notifications_requeue_stale(now=timezone.now() + timedelta(minutes=1)) == 1
    provider.wait_for(1)
    assert len(provider.accepted()) == 1
