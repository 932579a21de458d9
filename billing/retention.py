"""Pruning what the gate keeps only for a while: the answers to keyed consumes.

A consume's answer (`ConsumeAnswer`, one per keyed consume and one per
click of the browser gate, under a random key) is what replays the first
answer when its key comes again. Keys are honoured for
IDEMPOTENCY_RETENTION_DAYS (35 at least), then their answers are deleted.
The usage ledger (`UsageEvent`) is never pruned: it still holds the key of
every consume that was allowed, so a retry that comes after its answer is
gone still cannot be counted twice (the ledger's unique key refuses it, and
the consume answers 409 `idempotency_key_expired`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from billing.models import ConsumeAnswer
from config.batches import delete_in_batches

BATCH_SIZE = 5000


def consume_answers_prune(*, now: datetime | None = None, batch_size: int = BATCH_SIZE) -> int:
    """Delete the answers older than the idempotency window; returns how many.

    Safe to run twice, and from two processes at once: each batch locks the
    rows it takes (skipping rows another run holds), so runs share the work
    instead of waiting on each other or deadlocking.
    """
    cutoff = (now or timezone.now()) - timedelta(days=settings.IDEMPOTENCY_RETENTION_DAYS)
    # In id order, which is about the order of `created_at`: the oldest rows
    # come first on the primary key's index, and a batch stops at its limit.
    expired = ConsumeAnswer.objects.filter(created_at__lt=cutoff).order_by("pk")
    return delete_in_batches(expired, batch_size=batch_size)
