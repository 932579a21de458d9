"""Pruning the outbox: notifications whose delivery is over, with their attempts.

A notification is kept NOTIFICATION_RETENTION_DAYS (90 by default) after
its delivery ended: sent, or failed for good. Failed ones go too: after
that long the period they reported on is over and nobody will resend them,
and keeping them would let a dead endpoint grow the table for ever. What is
still pending or being sent is never pruned, nor one that was resent or
tried within the window. The firings (the alert history) and the usage
ledger are kept.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from alerts.models import DeliveryAttempt, DeliveryStatus, Notification
from config.batches import delete_in_batches

# Notifications deleted per transaction, with their attempts.
BATCH_SIZE = 5000


def notifications_prune(*, now: datetime | None = None, batch_size: int = BATCH_SIZE) -> int:
    """Delete the notifications whose delivery ended before the retention
    window, and their attempts; returns how many notifications.

    Safe to run twice, and from two processes at once: each batch locks the
    rows it takes, skipping those another run (or the admin's Resend) holds.
    """
    cutoff = (now or timezone.now()) - timedelta(days=settings.NOTIFICATION_RETENTION_DAYS)
    tried_lately = DeliveryAttempt.objects.filter(
        notification=OuterRef("pk"), started_at__gte=cutoff
    )
    finished = (
        Notification.objects.filter(
            status__in=[DeliveryStatus.SENT, DeliveryStatus.FAILED], created_at__lt=cutoff
        )
        .filter(Q(sent_at__isnull=True) | Q(sent_at__lt=cutoff))
        .exclude(Exists(tried_lately))
        .order_by("pk")
    )
    return delete_in_batches(finished, batch_size=batch_size)
