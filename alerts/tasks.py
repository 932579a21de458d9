"""The alerts app's periodic tasks (config/settings.py, CELERY_BEAT_SCHEDULE).
The delivery task itself is alerts/outbox.py's, beside the rows it delivers.
"""

from __future__ import annotations

from celery import shared_task

from alerts.outbox import notifications_requeue_stale
from alerts.retention import notifications_prune
from alerts.services.credits import credit_balances_check
from alerts.services.holds import holds_expire
from alerts.services.invoicing import invoices_close_periods
from alerts.services.limit_requests import limit_requests_revert_due
from alerts.services.plan_settling import plans_settle_due
from alerts.services.platform_config import platform_alerts_settle_due


@shared_task(ignore_result=True)
def requeue_stale_notifications() -> int:
    return notifications_requeue_stale()


@shared_task(ignore_result=True)
def prune_notifications() -> int:
    return notifications_prune()


@shared_task(ignore_result=True)
def check_credit_balances() -> int:
    return credit_balances_check()


@shared_task(ignore_result=True)
def close_invoice_periods() -> int:
    return invoices_close_periods()


@shared_task(ignore_result=True)
def settle_plans() -> int:
    return plans_settle_due()


@shared_task(ignore_result=True)
def revert_limit_requests() -> int:
    return limit_requests_revert_due()


@shared_task(ignore_result=True)
def expire_holds() -> int:
    return holds_expire()


@shared_task(ignore_result=True)
def settle_platform_alerts() -> int:
    return platform_alerts_settle_due()
