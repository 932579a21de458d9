"""End to end with a real Celery worker on Redis, Anymail's Postmark backend
and a local stand-in for Postmark: usage in, emails and webhooks out. And a
delivery after a worker was cut short, run directly, as no worker can be
stopped on cue here (tests/faults kills real ones).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from unittest import mock
from urllib.parse import parse_qs, urlsplit

import pytest
from celery.contrib.testing.worker import start_worker
from django.utils import timezone
from kombu.exceptions import OperationalError
from standardwebhooks.webhooks import Webhook

from alerts.models import DeliveryAttempt, DeliveryStatus, Notification
from alerts.outbox import CUT_SHORT, notification_deliver, notifications_requeue_stale
from alerts.transports import EMAIL_METADATA_KEY, webhook_message_id
from alerts.webhooks import webhook_endpoint_create
from config.celery import app
from tests.factories import AdminMembershipFactory
from tests.helpers import absolute_alert, assert_waits_for_a_retry, ingest, post_usage
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
    # Celery's worker sets up logging for the process (the root logger at
    # ERROR, its handlers replaced): the tests after this one need it back.
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        with start_worker(
            app, pool="threads", concurrency=2, perform_ping_check=False, shutdown_timeout=10
        ) as running:
            yield running
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers


def test_usage_crossing_a_threshold_emails_each_admin_once(
    api, organization, owner, provider, worker
):
    second = AdminMembershipFactory(organization=organization)
    absolute_alert(organization, 100)
    post_usage(api, {"idempotency_key": "a", "credits": 60}, status=202)
    post_usage(api, {"idempotency_key": "b", "credits": 60}, status=202)
    post_usage(api, {"idempotency_key": "c", "credits": 60}, status=202)
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
    absolute_alert(organization, 1)
    post_usage(api, {"idempotency_key": "a", "credits": 5}, status=202)
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
        alert = absolute_alert(organization, 10)
        post_usage(api, {"idempotency_key": "a", "credits": 10}, status=202)
        (delivery,) = receiver.wait_for(1, seconds=60)
        assert len(receiver.received) == 3
        assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
        payload = Webhook(secret).verify(delivery.body, delivery.headers)
        assert payload["type"] == "alert.triggered"
        assert payload["data"]["organization"] == "acme"
        assert payload["data"]["alert_id"] == alert.pk
        assert (payload["data"]["threshold"], payload["data"]["value"]) == ("10", "10")
        # Each retry was signed afresh with the endpoint's secret, under the one id.
        webhook = wait_until(
            lambda: Notification.objects.filter(channel="webhook", status="sent").first(),
            what="the webhook to be recorded as sent",
        )
        assert webhook.recipient == str(endpoint.pk)
        for received in receiver.received:
            assert received.headers["webhook-id"] == webhook_message_id(webhook)
            Webhook(secret).verify(received.body, received.headers)
    # Three attempts recorded with the receiver's answers; a 503 does not disable.
    assert webhook.attempts == 3
    assert [(a.succeeded, a.response_status) for a in webhook.delivery_attempts.all()] == [
        (False, 503),
        (False, 503),
        (True, 200),
    ]
    endpoint.refresh_from_db()
    assert endpoint.disabled_at is None


def test_a_task_lost_while_redis_is_down_is_recovered_by_the_sweep(
    api, organization, owner, provider, worker
):
    absolute_alert(organization, 1)
    with mock.patch(
        "alerts.outbox.deliver_notification.delay", side_effect=OperationalError("Redis is down")
    ):
        post_usage(
            api, {"idempotency_key": "a", "credits": 5}, status=202
        )  # the write succeeds even though nothing could be queued
    notification = Notification.objects.get()
    assert notification.status == DeliveryStatus.PENDING
    assert provider.received == []
    assert notifications_requeue_stale(now=timezone.now() + timedelta(minutes=1)) == 1
    provider.wait_for(1)
    assert len(provider.accepted()) == 1


# After an attempt cut short


@pytest.mark.django_db  # not a transaction: nothing is queued on commit
def test_after_a_cut_short_attempt_a_failing_message_search_sends_nothing_and_retries_later(
    organization, owner, settings
):
    absolute_alert(organization, 1)
    ingest(organization, 5, key="a")
    notification = Notification.objects.get()
    # What a worker that died mid-send leaves: its claim, now expired, and an
    # attempt that never finished.
    long_ago = timezone.now() - timedelta(hours=1)
    Notification.objects.filter(pk=notification.pk).update(
        status=DeliveryStatus.SENDING, claimed_until=long_ago, attempts=1
    )
    DeliveryAttempt.objects.create(notification=notification, started_at=long_ago)

    # Its message search fails; an email sent blind would be recorded, and show.
    with (
        postmark_stub(search_status=500) as provider,
        mock.patch("alerts.outbox.deliver_notification.apply_async") as queued,
    ):
        settings.EMAIL_BACKEND = "anymail.backends.postmark.EmailBackend"
        settings.ANYMAIL = {"POSTMARK_SERVER_TOKEN": "test-token", "POSTMARK_API_URL": provider.url}
        settings.CELERY_TASK_ALWAYS_EAGER = False  # as with a worker: the retry is queued
        notification_deliver(notification_id=notification.pk)

    # The provider was asked about this notification's email, and sent nothing.
    assert [urlsplit(r.path).path for r in provider.received] == ["/messages/outbound"]
    search = provider.received[0]
    assert parse_qs(urlsplit(search.path).query)[f"metadata_{EMAIL_METADATA_KEY}"] == [
        str(notification.uid)
    ]
    assert search.headers["x-postmark-server-token"] == "test-token"
    # Back to pending, for a later retry, queued to run then.
    assert_waits_for_a_retry(notification, attempts=2, error="Message search: HTTP 500")
    assert notification.provider_message_id == ""
    queued.assert_called_once()
    assert queued.call_args.args == ((notification.pk,),)
    assert queued.call_args.kwargs["countdown"] > 0
    # The cut-short attempt is closed as such; this one failed on the search.
    cut_short, searched = notification.delivery_attempts.all()
    assert (cut_short.error, cut_short.succeeded) == (CUT_SHORT, False)
    assert cut_short.finished_at is not None
    assert (searched.error, searched.response_status) == ("Message search: HTTP 500", 500)
    assert not searched.succeeded and searched.finished_at is not None


def test_a_depleted_balance_and_its_top_up_reach_admins_through_the_worker(
    api, organization, owner, provider, worker
):
    from decimal import Decimal

    from alerts.services.credit_settings import (
        AutoTopUpInput,
        auto_top_up_set,
        balance_alert_create,
    )

    organization.credit_allowance = Decimal(10)
    organization.save()
    balance_alert_create(organization=organization, alert_type="depleted")
    auto_top_up_set(
        organization=organization,
        settings=AutoTopUpInput(
            enabled=True, threshold=Decimal(5), credits=Decimal(20), max_per_period=1
        ),
    )
    post_usage(api, {"idempotency_key": "a", "credits": 10}, status=202)  # depleted, topped up
    emails = provider.wait_for(1)
    assert [email.json()["Subject"] for email in emails] == [
        "[Acme Inc] Auto top-up added 20 credits"
    ]
    post_usage(api, {"idempotency_key": "b", "credits": 25}, status=202)  # 20 -> 0, no top-up
    emails = provider.wait_for(3)
    assert sorted(email.json()["Subject"] for email in emails[1:]) == [
        "[Acme Inc] Auto top-up reached its limit for this billing period",
        "[Acme Inc] The credit balance is used up",
    ]
    wait_until(lambda: not Notification.objects.exclude(status=DeliveryStatus.SENT).exists())
    assert len(provider.accepted()) == 3


def test_a_plan_alert_emails_each_organizations_admins_once_through_the_worker(provider, worker):
    """SPEC §12: a plan alert added to a plan fires, through the worker's
    settling, where usage is already past it, and on a later crossing
    elsewhere: one email per organization's admin, none twice.
    """
    from decimal import Decimal

    from accounts.plans import plan_create
    from accounts.services import api_key_create
    from alerts.services.changes import organization_update
    from alerts.services.plan_alerts import plan_alert_create
    from alerts.services.plan_settling import plans_settle_due
    from tests.factories import OrganizationFactory
    from tests.fixtures import ApiClient

    team = plan_create(key="team", name="Team", credit_allowance=Decimal(1000))
    admins, keys = [], []
    for n in range(3):
        organization = OrganizationFactory(name=f"Org {n}")
        admins.append(AdminMembershipFactory(organization=organization).user.email)
        organization_update(organization=organization, plan=team)
        keys.append(ApiClient(api_key_create(organization=organization)[1]))
    for api in keys[:2]:
        post_usage(api, {"idempotency_key": "past", "credits": 600}, status=202)
    plan_alert_create(plan=team, threshold_type="percentage", threshold=Decimal(50))
    emails = provider.wait_for(2)  # settled by the worker: the two already past
    post_usage(keys[2], {"idempotency_key": "cross", "credits": 700}, status=202)
    emails = provider.wait_for(3)
    plans_settle_due()  # a second settling, as a second beat would: nothing more
    wait_until(lambda: not Notification.objects.exclude(status=DeliveryStatus.SENT).exists())
    assert sorted(email.json()["To"] for email in emails) == sorted(admins)
    assert len(provider.accepted()) == 3
    assert all("50% of the credit allowance" in e.json()["TextBody"] for e in emails), [
        e.json()["TextBody"][:300] for e in emails
    ]
