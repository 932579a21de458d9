from __future__ import annotations

import logging
from functools import partial

from celery import shared_task
from django.db import transaction

from alerts.delivery import notification_deliver, notifications_requeue_stale
from alerts.retention import notifications_prune

logger = logging.getLogger(__name__)


@shared_task(ignore_result=True)
def deliver_notification(notification_id: int) -> None:
    notification_deliver(notification_id=notification_id)


@shared_task(ignore_result=True)
def requeue_stale_notifications() -> int:
    return notifications_requeue_stale()


@shared_task(ignore_result=True)
def prune_notifications() -> int:
    return notifications_prune()


def _publish_delivery(notification_id: int) -> None:
    try:
        deliver_notification.delay(notification_id)
    except Exception:
        # The row is committed and pending: the periodic sweep will queue it.
        logger.warning(
            "Could not queue notification %s; the sweep will", notification_id, exc_info=True
        )


def deliver_notification_on_commit(notification_id: int) -> None:
    """Queue the delivery once the transaction commits. A broker that is down
    then must not turn a recorded write into an error: the sweep recovers it.
    """
    transaction.on_commit(partial(_publish_delivery, notification_id), robust=True)
