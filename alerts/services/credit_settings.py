"""What an organization's admins set about its credit balance (SPEC §9): its
balance alerts (at most 10) and its auto top-up. Each change is audited.

A new or edited balance alert whose condition already holds starts in
alarm without firing (it speaks of a change, and none happened): it fires
on the next crossing. Setting either one makes writes keep the
organization's balance from then on (`credit_balance_watch`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import transaction

from accounts.audit import audit_record
from accounts.models import Membership, Organization
from accounts.services import organization_cap_check
from alerts.models import (
    MAX_BALANCE_ALERTS,
    BalanceAlert,
    BalanceAlertType,
    Recipients,
)
from alerts.services.configuration import validate_recipients
from alerts.services.credits import (
    balance_alert_initial_status,
    credit_balance_watch,
    current_balance,
)
from billing.models import GRANT_PRIORITY_MAX, GRANT_PRIORITY_MIN, AutoTopUp
from config.credits import format_credits
from config.dbretry import retry_on_conflict
from config.errors import InvalidInput, NotFound

TOO_MANY_BALANCE_ALERTS = f"An organization can have at most {MAX_BALANCE_ALERTS} balance alerts."


def validate_balance_alert(alert_type: str, threshold: Decimal | None) -> None:
    if alert_type not in BalanceAlertType.values:
        raise InvalidInput(
            "type must be 'depleted', 'dropped' or 'recovered'.", code="invalid", field="type"
        )
    if alert_type == BalanceAlertType.DROPPED:
        if threshold is None or threshold <= 0:
            raise InvalidInput(
                "A 'dropped' alert needs a threshold greater than 0.",
                code="invalid_threshold",
                field="threshold",
            )
    elif threshold is not None:
        raise InvalidInput(
            f"A '{alert_type}' alert takes no threshold.",
            code="invalid_threshold",
            field="threshold",
        )


def _snapshot(alert: BalanceAlert, admins: Sequence[Membership]) -> dict[str, Any]:
    return {
        "type": alert.type,
        "threshold": None if alert.threshold is None else format_credits(alert.threshold),
        "notify": alert.notify,
        "admins": sorted(m.pk for m in admins),
    }


@retry_on_conflict
def balance_alert_create(
    *,
    organization: Organization,
    alert_type: str,
    threshold: Decimal | None = None,
    notify: str = Recipients.ALL_ADMINS,
    admins: Sequence[Membership] = (),
) -> BalanceAlert:
    validate_balance_alert(alert_type, threshold)
    validate_recipients(organization, notify, admins)
    with transaction.atomic():
        organization_cap_check(
            organization=organization,
            existing=BalanceAlert.objects.filter(organization=organization),
            cap=MAX_BALANCE_ALERTS,
            refusal=InvalidInput(TOO_MANY_BALANCE_ALERTS, code="too_many_alerts", field="type"),
        )
        credit_balance_watch(organization=organization)
        alert = BalanceAlert(
            organization=organization, type=alert_type, threshold=threshold, notify=notify
        )
        alert.status = balance_alert_initial_status(alert, current_balance(organization))
        alert.save()
        chosen = list(admins) if notify == Recipients.SPECIFIC_ADMINS else []
        if chosen:
            alert.admins.add(*chosen)
        audit_record(
            organization=organization,
            action="balance_alert.created",
            target_type="balance_alert",
            target_id=alert.pk,
            after=_snapshot(alert, chosen),
        )
    return alert


def balance_alert_get(*, organization: Organization, alert_id: int) -> BalanceAlert:
    alert = BalanceAlert.objects.filter(organization=organization, pk=alert_id).first()
    if alert is None:
        raise NotFound(f"No balance alert {alert_id} in this organization.", code="not_found")
    return alert


@retry_on_conflict
def balance_alert_update(
    *,
    alert: BalanceAlert,
    alert_type: str,
    threshold: Decimal | None,
    notify: str,
    admins: Sequence[Membership],
) -> BalanceAlert:
    """Change an alert. A new type or threshold re-arms it (or puts it in
    alarm, without firing, if the balance already meets the new condition).
    """
    organization = alert.organization
    validate_balance_alert(alert_type, threshold)
    validate_recipients(organization, notify, admins)
    with transaction.atomic():
        locked = BalanceAlert.objects.select_for_update().filter(pk=alert.pk).first()
        if locked is None:
            raise NotFound(f"No balance alert {alert.pk} in this organization.", code="not_found")
        before = _snapshot(locked, list(locked.admins.all()))
        condition_changed = (locked.type, locked.threshold) != (alert_type, threshold)
        locked.type, locked.threshold, locked.notify = alert_type, threshold, notify
        if condition_changed:
            locked.status = balance_alert_initial_status(locked, current_balance(organization))
        locked.save()
        chosen = list(admins) if notify == Recipients.SPECIFIC_ADMINS else []
        locked.admins.set(chosen)
        audit_record(
            organization=organization,
            action="balance_alert.updated",
            target_type="balance_alert",
            target_id=locked.pk,
            before=before,
            after=_snapshot(locked, chosen),
        )
    return locked


def balance_alert_delete(*, alert: BalanceAlert) -> None:
    with transaction.atomic():
        before = _snapshot(alert, list(alert.admins.all()))
        alert_id = alert.pk
        alert.delete()
        audit_record(
            organization=alert.organization,
            action="balance_alert.deleted",
            target_type="balance_alert",
            target_id=alert_id,
            before=before,
        )


def auto_top_up_get(*, organization: Organization) -> AutoTopUp:
    """The organization's auto top-up; an unsaved, disabled one if none yet."""
    return AutoTopUp.objects.filter(organization=organization).first() or AutoTopUp(
        organization=organization
    )


@dataclass(frozen=True)
class AutoTopUpInput:
    enabled: bool
    threshold: Decimal | None
    credits: Decimal | None
    priority: int = 50
    expires_after_days: int | None = None
    max_per_period: int = 3


def validate_auto_top_up(settings: AutoTopUpInput) -> None:
    if settings.enabled and settings.threshold is None:
        raise InvalidInput(
            "Say below which balance to top up.", code="threshold_required", field="threshold"
        )
    if settings.enabled and settings.credits is None:
        raise InvalidInput(
            "Say how many credits to top up by.", code="credits_required", field="credits"
        )
    for name in ("threshold", "credits"):
        value = getattr(settings, name)
        if value is not None and value <= 0:
            raise InvalidInput(f"{name} must be greater than 0.", code="invalid", field=name)
    if not GRANT_PRIORITY_MIN <= settings.priority <= GRANT_PRIORITY_MAX:
        raise InvalidInput("priority must be between 1 and 100.", code="invalid", field="priority")
    if settings.expires_after_days is not None and settings.expires_after_days < 1:
        raise InvalidInput(
            "expires_after_days must be at least 1 (or null: never).",
            code="invalid",
            field="expires_after_days",
        )
    if settings.max_per_period < 1:
        raise InvalidInput(
            "max_per_period must be at least 1.", code="invalid", field="max_per_period"
        )


@retry_on_conflict
def auto_top_up_set(*, organization: Organization, settings: AutoTopUpInput) -> AutoTopUp:
    validate_auto_top_up(settings)
    with transaction.atomic():
        top_up, _ = AutoTopUp.objects.select_for_update().get_or_create(organization=organization)
        before = _top_up_snapshot(top_up)
        top_up.enabled = settings.enabled
        top_up.threshold = settings.threshold
        top_up.credits = settings.credits
        top_up.priority = settings.priority
        top_up.expires_after_days = settings.expires_after_days
        top_up.max_per_period = settings.max_per_period
        top_up.save()
        if settings.enabled:
            credit_balance_watch(organization=organization)
        audit_record(
            organization=organization,
            action="auto_top_up.updated",
            target_type="auto_top_up",
            target_id=top_up.pk,
            before=before,
            after=_top_up_snapshot(top_up),
        )
    return top_up


def _top_up_snapshot(top_up: AutoTopUp) -> dict[str, Any]:
    return {
        name: format_credits(value) if isinstance(value, Decimal) else value
        for name, value in top_up.settings().items()
    }
