"""Delivery never loops (SPEC §16): any error while delivering is a failed
attempt, the claim itself is capped, the last attempt marks the notification
failed, and a failed one can be sent again from the admin.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from unittest import mock

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from alerts.models import DeliveryAttempt, DeliveryStatus, Notification
from alerts.outbox import (
    CUT_SHORT,
    EXHAUSTED,
    MAX_ATTEMPTS,
    notification_deliver,
    notifications_requeue_stale,
)
from tests.helpers import absolute_alert, assert_waits_for_a_retry, ingest

pytestmark = pytest.mark.django_db


@pytest.fixture
def email(organization, owner):
    """One pending email to the owner, about an alert that fired."""
    absolute_alert(organization, 1)
    ingest(organization, 5, key="k")
    return Notification.objects.get()


def due_now(notification):
    """Skip the backoff: the next attempt is due."""
    Notification.objects.filter(pk=notification.pk).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1)
    )


def template_error(**kwargs):
    raise ValueError("the template needs 'primary'")


class TestAnErrorThatIsNotTheProvidersIsAFailedAttempt:
    def test_it_is_recorded_logged_and_retried_with_backoff(self, email, caplog):
        with (
            mock.patch("alerts.transports.alert_email_build", side_effect=template_error),
            caplog.at_level(logging.ERROR, logger="alerts.outbox"),
        ):
            notification_deliver(notification_id=email.pk)

        assert_waits_for_a_retry(
            email, attempts=1, error="ValueError: the template needs 'primary'"
        )
        [attempt] = email.delivery_attempts.all()
        assert not attempt.succeeded and attempt.finished_at is not None
        assert attempt.error == "ValueError: the template needs 'primary'"
        [logged] = [r for r in caplog.records if "delivery raised" in r.getMessage()]
        assert logged.exc_info is not None and logged.exc_info[0] is ValueError
        assert mail.outbox == []

    def test_after_the_last_attempt_it_is_failed_and_never_claimed_again(self, email, caplog):
        with (
            mock.patch("alerts.transports.alert_email_build", side_effect=template_error),
            caplog.at_level(logging.ERROR, logger="alerts.outbox"),
        ):
            for attempt in range(1, MAX_ATTEMPTS + 1):
                due_now(email)
                notification_deliver(notification_id=email.pk)
                email.refresh_from_db()
                expected = DeliveryStatus.FAILED if attempt == MAX_ATTEMPTS else "pending"
                assert (email.status, email.attempts) == (expected, attempt)

        assert email.delivery_attempts.count() == MAX_ATTEMPTS
        assert any("failed for good" in r.getMessage() for r in caplog.records)

        # Neither a task run again nor the sweep brings it back.
        due_now(email)
        with mock.patch("alerts.outbox.deliver_notification.delay") as queued:
            notifications_requeue_stale(now=timezone.now() + timedelta(hours=1))
        queued.assert_not_called()
        notification_deliver(notification_id=email.pk)
        email.refresh_from_db()
        assert (email.status, email.attempts) == (DeliveryStatus.FAILED, MAX_ATTEMPTS)
        assert email.delivery_attempts.count() == MAX_ATTEMPTS
        assert mail.outbox == []

    def test_a_bug_in_a_webhook_payload_is_a_failed_attempt(self, email):
        Notification.objects.filter(pk=email.pk).update(channel="webhook", recipient="not-an-id")

        notification_deliver(notification_id=email.pk)

        email.refresh_from_db()
        assert email.status == DeliveryStatus.PENDING
        assert email.last_error.startswith("ValueError: invalid literal for int()")
        assert email.delivery_attempts.get().error == email.last_error


class TestTheClaimIsCapped:
    def test_a_row_whose_last_worker_died_is_not_claimed_again(self, email):
        # What a worker killed during the last attempt leaves: a `sending`
        # row at the cap whose lease ran out, and an attempt never finished.
        long_ago = timezone.now() - timedelta(hours=1)
        Notification.objects.filter(pk=email.pk).update(
            status=DeliveryStatus.SENDING, claimed_until=long_ago, attempts=MAX_ATTEMPTS
        )
        unfinished = DeliveryAttempt.objects.create(notification=email, started_at=long_ago)

        notification_deliver(notification_id=email.pk)
        email.refresh_from_db()
        assert (email.status, email.attempts) == (DeliveryStatus.SENDING, MAX_ATTEMPTS)
        assert email.delivery_attempts.count() == 1

        with mock.patch("alerts.outbox.deliver_notification.delay") as queued:
            assert notifications_requeue_stale() == 0
        queued.assert_not_called()
        assert mail.outbox == []
        # The sweep shows it for what it is: failed, resendable.
        email.refresh_from_db()
        assert email.status == DeliveryStatus.FAILED
        assert email.claimed_until is None
        assert email.last_error == EXHAUSTED
        unfinished.refresh_from_db()
        assert unfinished.error == CUT_SHORT and unfinished.finished_at is not None

    def test_a_row_with_attempts_left_is_still_taken_over(self, email):
        long_ago = timezone.now() - timedelta(hours=1)
        Notification.objects.filter(pk=email.pk).update(
            status=DeliveryStatus.SENDING, claimed_until=long_ago, attempts=MAX_ATTEMPTS - 1
        )

        notifications_requeue_stale()

        email.refresh_from_db()
        assert (email.status, email.attempts) == (DeliveryStatus.SENT, MAX_ATTEMPTS)
        assert len(mail.outbox) == 1


class TestResendFromTheAdmin:
    def test_a_failed_notification_at_the_cap_is_sent_again(
        self, email, staff_client, django_capture_on_commit_callbacks
    ):
        Notification.objects.filter(pk=email.pk).update(
            status=DeliveryStatus.FAILED, attempts=MAX_ATTEMPTS, last_error="HTTP 503"
        )

        with django_capture_on_commit_callbacks(execute=True):
            response = staff_client.post(
                reverse("admin:alerts_notification_changelist"),
                {"action": "resend_selected", "_selected_action": [email.pk]},
                follow=True,
            )

        assert response.status_code == 200
        [message] = [str(m) for m in response.context["messages"]]
        assert message == "Queued 1 notification(s) to be sent again."
        email.refresh_from_db()
        assert (email.status, email.attempts) == (DeliveryStatus.SENT, 1)
        assert [m.to for m in mail.outbox] == [[email.recipient]]

    def test_the_action_is_offered_on_the_changelist(self, email, staff_client):
        page = staff_client.get(reverse("admin:alerts_notification_changelist"))
        assert 'value="resend_selected"' in page.content.decode()
