"""Retention of the outbox (SPEC §16): notifications whose delivery ended
(sent, or failed for good) more than NOTIFICATION_RETENTION_DAYS ago are
pruned with their attempts by a beat task; undelivered ones, the firings and
the usage ledger are kept.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.conf import settings

from alerts.models import (
    DeliveryAttempt,
    Firing,
    Notification,
)
from alerts.retention import notifications_prune
from billing.models import UsageEvent
from tests.helpers import ingest, run_daily_task

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 15, 12, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.fixture
def firing(organization):
    return Firing.objects.create(
        organization=organization,
        kind="organization_alert",
        threshold=Decimal(1),
        threshold_credits=Decimal(1),
        value=Decimal(1),
        period_start=NOW - 100 * DAY,
        period_end=NOW - 70 * DAY,
        dedupe_key="alert:1",
    )


def notification(organization, firing, name, status, *, created, sent=None, tried=None):
    """A notification of `firing` created `created` ago, sent `sent` ago, with
    an attempt started `tried` ago (when given).
    """
    row = Notification.objects.create(
        organization=organization,
        group_key=name,
        channel="email",
        recipient=f"{name}@acme.test",
        event_type="alert.triggered",
        status=status,
        created_at=NOW - created,
        sent_at=None if sent is None else NOW - sent,
    )
    row.firings.add(firing)
    if tried is not None:
        DeliveryAttempt.objects.create(
            notification=row, started_at=NOW - tried, finished_at=NOW - tried
        )
    return row


def test_finished_notifications_older_than_the_window_go_with_their_attempts(organization, firing):
    assert settings.NOTIFICATION_RETENTION_DAYS == 90
    ingest(organization, 5, key="k")
    ledger = list(UsageEvent.objects.values_list("pk", "credits"))
    old = 100 * DAY
    pruned = [
        notification(organization, firing, "sent", "sent", created=old, sent=old, tried=old),
        notification(organization, firing, "failed", "failed", created=old, tried=old),
        notification(
            organization, firing, "just-past", "sent", created=90 * DAY + timedelta(minutes=5)
        ),
    ]
    kept = [
        notification(organization, firing, "recent", "sent", created=10 * DAY, sent=10 * DAY),
        notification(
            organization, firing, "in-window", "sent", created=90 * DAY - timedelta(minutes=5)
        ),
        notification(organization, firing, "pending", "pending", created=old, tried=old),
        notification(organization, firing, "sending", "sending", created=old, tried=old),
        # Resent lately from the admin: its delivery ended within the window.
        notification(organization, firing, "resent", "sent", created=old, sent=2 * DAY),
        notification(organization, firing, "retried", "failed", created=old, tried=3 * DAY),
    ]
    pruned_ids = [n.pk for n in pruned]

    with time_machine.travel(NOW, tick=False):
        assert notifications_prune() == 3

    assert sorted(Notification.objects.values_list("group_key", flat=True)) == sorted(
        n.group_key for n in kept
    )
    assert not DeliveryAttempt.objects.filter(notification_id__in=pruned_ids).exists()
    assert DeliveryAttempt.objects.count() == 3  # pending, sending, retried
    links = Notification.firings.through.objects
    assert not links.filter(notification_id__in=pruned_ids).exists()
    assert links.count() == len(kept)
    assert Firing.objects.get() == firing  # the alert history stays
    assert list(UsageEvent.objects.values_list("pk", "credits")) == ledger


def test_batches_and_running_twice(organization, firing):
    for n in range(7):
        notification(organization, firing, f"old-{n}", "sent", created=100 * DAY, tried=100 * DAY)
    notification(organization, firing, "new", "sent", created=DAY)

    with time_machine.travel(NOW, tick=False):
        assert notifications_prune(batch_size=3) == 7
        assert notifications_prune(batch_size=3) == 0

    assert list(Notification.objects.values_list("group_key", flat=True)) == ["new"]
    assert not DeliveryAttempt.objects.exists()


def test_a_shorter_window(organization, firing, settings):
    settings.NOTIFICATION_RETENTION_DAYS = 7
    notification(organization, firing, "week-old", "sent", created=8 * DAY, sent=8 * DAY)
    with time_machine.travel(NOW, tick=False):
        assert notifications_prune() == 1


def test_the_beat_schedule_runs_the_pruning(organization, firing):
    notification(organization, firing, "old", "failed", created=100 * DAY)
    run_daily_task("alerts.tasks.prune_notifications", at=NOW)

    assert not Notification.objects.exists()
