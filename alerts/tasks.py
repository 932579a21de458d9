from __future__ import annotations

from celery import shared_task

from alerts.delivery import notification_deliver, notifications_requeue_stale


@shared_task(ignore_result=True)
def deliver_notification(notification_id: int) -> None:
    notification_deliver(notification_id=notification_id)


@shared_task(ignore_result=True)
def requeue_stale_notifications() -> int:
    return notifications_requeue_stale()
