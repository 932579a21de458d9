"""Deleting many rows in short transactions, for the retention tasks."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import QuerySet


def delete_in_batches(rows: QuerySet[Any], *, batch_size: int) -> int:
    """Delete `rows` (ordered, oldest first) `batch_size` at a time, each batch
    in its own transaction; returns how many were deleted.

    A backlog is taken in short transactions that hold few locks, never in one
    that holds them all. Each batch locks the rows it takes and skips those
    another run holds, so two runs at once share the work instead of waiting
    on each other or deadlocking.
    """
    deleted = 0
    while True:
        with transaction.atomic():
            batch = list(
                rows.select_for_update(skip_locked=True).values_list("pk", flat=True)[:batch_size]
            )
            if batch:
                # Related rows (a notification's attempts) go in one statement each.
                rows.model._default_manager.filter(pk__in=batch).only("pk").delete()
        deleted += len(batch)
        if len(batch) < batch_size:
            return deleted
