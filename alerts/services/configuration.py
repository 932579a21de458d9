"""The alerts an organization sets: organization alerts and the per-user alert
policy. Each change is audited and re-evaluated in its transaction, so an
alert already passed fires at once (unless told to wait for the next period).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone

from accounts.audit import audit_record
from accounts.models import Membership, Organization, Role
from accounts.selectors import validate_admins
from accounts.services import organization_cap_check
from alerts.models import (
    MAX_ORGANIZATION_ALERTS,
    MONEY_THRESHOLD_TYPES,
    PERCENT_THRESHOLD_TYPES,
    OrganizationAlert,
    Recipients,
    ThresholdType,
    UserAlertPolicy,
)
from alerts.services.rules import (
    alerts_evaluate_organization,
    crossed,
    forecast_alert_candidates,
    money_watched,
    threshold_credits,
)
from billing.meters import meter_values
from billing.models import CREDITS_METER, Meter
from billing.money import money_as_it_stands
from billing.periods import organization_period
from billing.selectors import organization_used
from config.credits import format_credits
from config.dbretry import retry_on_conflict
from config.errors import Conflict, InvalidInput, NotFound

TOO_MANY_ALERTS = f"An organization can have at most {MAX_ORGANIZATION_ALERTS} alerts per meter."


def validate_meter_threshold(meter: Meter | None, threshold_type: str) -> None:
    """An alert on a meter other than credits is absolute, in the meter's unit (SPEC §10)."""
    if meter is not None and threshold_type != ThresholdType.ABSOLUTE:
        raise InvalidInput(
            f"An alert on the meter {meter.key!r} has an absolute threshold, in {meter.unit}.",
            code="invalid",
            field="threshold_type",
        )


def validate_threshold(threshold_type: str, threshold: Decimal) -> None:
    if threshold_type not in ThresholdType.values:
        raise InvalidInput(
            "threshold_type must be 'percentage', 'absolute', 'spend', 'invoice_total' or "
            "'forecast'.",
            code="invalid",
            field="threshold_type",
        )
    if threshold <= 0:
        raise InvalidInput(
            "The threshold must be greater than 0.", code="invalid_threshold", field="threshold"
        )
    if threshold_type in PERCENT_THRESHOLD_TYPES and not 1 <= threshold <= 100:
        raise InvalidInput(
            f"A {threshold_type} threshold must be between 1 and 100.",
            code="invalid_threshold",
            field="threshold",
        )


def validate_recipients(
    organization: Organization, notify: str, admins: Sequence[Membership]
) -> None:
    if notify not in Recipients.values:
        raise InvalidInput(
            "notify must be 'all_admins' or 'specific_admins'.", code="invalid", field="notify"
        )
    validate_admins(organization=organization, admins=admins)
    if notify == Recipients.SPECIFIC_ADMINS and not admins:
        raise InvalidInput(
            "Choose at least one admin to notify, or notify all admins.",
            code="admins_required",
            field="admins",
        )


def alert_create(
    *,
    organization: Organization,
    threshold_type: str,
    threshold: Decimal,
    notify: str = Recipients.ALL_ADMINS,
    admins: Sequence[Membership] = (),
    fire_if_already_exceeded: bool = True,
    meter: Meter | None = None,
) -> OrganizationAlert:
    """Add an organization alert, on credits or on `meter`; one already passed
    fires at once unless `fire_if_already_exceeded` is False, in which case
    it waits for the next period.
    """
    validate_threshold(threshold_type, threshold)
    validate_meter_threshold(meter, threshold_type)
    validate_recipients(organization, notify, admins)
    with transaction.atomic():
        organization_cap_check(
            organization=organization,
            existing=OrganizationAlert.objects.filter(organization=organization, meter=meter),
            cap=MAX_ORGANIZATION_ALERTS,
            refusal=InvalidInput(TOO_MANY_ALERTS, code="too_many_alerts", field="threshold"),
        )
        alert = OrganizationAlert.objects.create(
            organization=organization,
            meter=meter,
            threshold_type=threshold_type,
            threshold=threshold,
            notify=notify,
        )
        chosen = list(admins) if notify == Recipients.SPECIFIC_ADMINS else []
        if chosen:
            alert.admins.add(*chosen)  # a new alert has none to replace
        if not fire_if_already_exceeded:
            quiet_if_already_passed(alert)
        audit_record(
            organization=organization,
            action="alert.created",
            target_type="organization_alert",
            target_id=alert.pk,
            after=alert_snapshot(alert, chosen),
        )
        alerts_evaluate_organization(organization=organization)
    return alert


def quiet_if_already_passed(alert: OrganizationAlert) -> None:
    """Created not to fire for a period already past it: quiet until the next."""
    organization = alert.organization
    period = organization_period(organization, timezone.now())
    if alert.threshold_type == ThresholdType.FORECAST:
        passed = bool(
            forecast_alert_candidates(
                [alert],
                period=period,
                allowance=period.allowance(organization.credit_allowance),
                used=organization_used(organization=organization, period=period),
                now=timezone.now(),
            )
        )
    elif alert.threshold_type in MONEY_THRESHOLD_TYPES:
        money = money_as_it_stands(organization=organization, period=period)
        passed = money is not None and crossed(
            None, money_watched(alert, money)[1], alert.threshold
        )
    elif alert.meter_id is not None:
        (value,) = meter_values(
            organization=organization, period=period, meter_ids={alert.meter_id}
        )
        passed = crossed(None, value.after, alert.threshold)
    else:
        threshold = threshold_credits(alert, period.allowance(organization.credit_allowance))
        used = organization_used(organization=organization, period=period)
        passed = crossed(None, used, threshold)
    if passed:
        alert.quiet_period_start = period.start
        alert.save(update_fields=["quiet_period_start"])


@retry_on_conflict
def alert_update(
    *,
    alert: OrganizationAlert,
    threshold_type: str | None = None,
    threshold: Decimal | None = None,
    notify: str | None = None,
    admins: Sequence[Membership] | None = None,
    enabled: bool | None = None,
) -> OrganizationAlert:
    """Edit an alert. A new threshold re-arms it: if usage is already past
    the new threshold it fires at once. `enabled` False turns it off (it
    never fires) until turned on again. Editing an alert inherited from the
    plan changes this organization's copy only: from then on it no longer
    follows the plan's alert (SPEC §12, `plan_override`).

    The alert is read again under its row lock and validated as it then
    stands: `alert` may have been loaded before a concurrent edit (whose
    re-arm would be lost, and whose change the audit would not see) or a
    delete (404, rather than writing the alert back).
    """
    with transaction.atomic():
        if not _lock_alert(alert):
            raise NotFound(f"No alert {alert.pk} in this organization.", code="alert_not_found")
        new_type = threshold_type or alert.threshold_type
        new_threshold = threshold if threshold is not None else alert.threshold
        new_notify = notify or alert.notify
        old_admins = list(alert.admins.all())
        new_admins = list(admins) if admins is not None else old_admins
        validate_threshold(new_type, new_threshold)
        validate_meter_threshold(alert.meter, new_type)
        validate_recipients(alert.organization, new_notify, new_admins)
        before = alert_snapshot(alert, old_admins)
        changed = ["threshold_type", "threshold", "notify", "enabled", "updated_at"]
        if enabled is not None:
            alert.enabled = enabled
        if alert.plan_alert_id is not None:
            alert.overridden = True
            alert.only_future_pending = False
            changed += ["overridden", "only_future_pending"]
        if new_type != alert.threshold_type or new_threshold != alert.threshold:
            alert.generation += 1
            alert.quiet_period_start = None
            changed += ["generation", "quiet_period_start"]
        alert.threshold_type, alert.threshold, alert.notify = new_type, new_threshold, new_notify
        alert.save(update_fields=changed)
        chosen = new_admins if new_notify == Recipients.SPECIFIC_ADMINS else []
        alert.admins.set(chosen)
        audit_record(
            organization=alert.organization,
            action="alert.updated",
            target_type="organization_alert",
            target_id=alert.pk,
            before=before,
            after=alert_snapshot(alert, chosen),
        )
        alerts_evaluate_organization(organization=alert.organization)
    return alert


@retry_on_conflict
def alert_delete(*, alert: OrganizationAlert) -> None:
    """Delete an alert, auditing it as it stands under its row lock (an edit
    may have changed it since `alert` was loaded). One deleted meanwhile is
    left as it is: deleted once, audited once. One inherited from the plan
    cannot be deleted here: it can be turned off (SPEC §12).
    """
    with transaction.atomic():
        if not _lock_alert(alert):
            return
        if alert.plan_alert_id is not None:
            raise Conflict(
                "This alert comes from the organization's plan: turn it off instead "
                '(PATCH {"enabled": false}).',
                code="inherited_alert",
            )
        audit_record(
            organization=alert.organization,
            action="alert.deleted",
            target_type="organization_alert",
            target_id=alert.pk,
            before=alert_snapshot(alert, list(alert.admins.all())),
        )
        alert.delete()


def _lock_alert(alert: OrganizationAlert) -> bool:
    """Lock the alert's row and load it afresh into `alert` (every field, and
    no admins cached from before); False if a concurrent delete removed it.
    """
    try:
        alert.refresh_from_db(from_queryset=OrganizationAlert.objects.select_for_update())
    except OrganizationAlert.DoesNotExist:
        return False
    return True


def alert_snapshot(alert: OrganizationAlert, admins: Sequence[Membership]) -> dict[str, Any]:
    """An alert as the audit trail keeps it."""
    return {
        "meter": alert.meter.key if alert.meter else CREDITS_METER,
        "source": alert.source,
        "enabled": alert.enabled,
        "threshold_type": alert.threshold_type,
        "threshold": format_credits(Decimal(alert.threshold)),
        "notify": alert.notify,
        "admins": sorted(admin.external_id for admin in admins),
    }


def _user_alert_policy_snapshot(
    policy: UserAlertPolicy, admins: Sequence[Membership]
) -> dict[str, Any]:
    return {
        "enabled": policy.enabled,
        "threshold": format_credits(Decimal(policy.threshold))
        if policy.threshold is not None
        else None,
        "notify_user": policy.notify_user,
        "admins": sorted(admin.external_id for admin in admins),
        "quiet_period_start": policy.quiet_period_start.isoformat()
        if policy.quiet_period_start
        else None,
    }


def validate_user_alert_threshold(*, enabled: bool, threshold: Decimal | None) -> None:
    """A member's threshold is a number of credits, more than 0; an enabled
    policy needs one.
    """
    if threshold is not None:
        validate_threshold(ThresholdType.ABSOLUTE, threshold)
    elif enabled:
        raise InvalidInput(
            "Set a threshold to turn per-user alerts on.",
            code="threshold_required",
            field="threshold",
        )


def validate_user_alert_recipients(
    *, enabled: bool, notify_user: bool, admins: Sequence[Membership]
) -> None:
    """An enabled policy must tell someone: it would otherwise record firings
    that nobody hears of.
    """
    if enabled and not notify_user and not any(m.role == Role.ADMIN for m in admins):
        raise InvalidInput(
            "Choose at least one admin to notify, or notify the member: "
            "as it stands these alerts would tell nobody.",
            code="nobody_to_notify",
            field="admins",
        )


def user_alert_policy_get(*, organization: Organization) -> UserAlertPolicy:
    policy = UserAlertPolicy.objects.filter(organization=organization).first()
    return policy or UserAlertPolicy(organization=organization)


def user_alert_policy_update(
    *,
    organization: Organization,
    enabled: bool | None = None,
    threshold: Decimal | None = None,
    clear_threshold: bool = False,
    notify_user: bool | None = None,
    admins: Sequence[Membership] | None = None,
    fire_if_already_exceeded: bool | None = None,
) -> UserAlertPolicy:
    """Change the per-user alert policy; a new threshold re-arms it.

    Members already past the threshold who have not been told are told at
    once, unless `fire_if_already_exceeded` is False: then they are not told
    this period, while a member who crosses later is. None keeps the choice
    made before, except that a new threshold notifies at once (as an edited
    organization alert does). An enabled policy must tell someone.
    """
    if threshold is not None:
        validate_user_alert_threshold(enabled=False, threshold=threshold)
    if admins is not None:
        validate_admins(organization=organization, admins=admins)
    with transaction.atomic():
        policy, created = UserAlertPolicy.objects.select_for_update().get_or_create(
            organization=organization
        )
        old_admins = [] if created else list(policy.admins.all())
        before = _user_alert_policy_snapshot(policy, old_admins)
        new_threshold = (
            None if clear_threshold else (threshold if threshold is not None else policy.threshold)
        )
        new_enabled = enabled if enabled is not None else policy.enabled
        validate_user_alert_threshold(enabled=new_enabled, threshold=new_threshold)
        new_notify_user = notify_user if notify_user is not None else policy.notify_user
        validate_user_alert_recipients(
            enabled=new_enabled,
            notify_user=new_notify_user,
            admins=old_admins if admins is None else admins,
        )
        threshold_changed = new_threshold != policy.threshold
        if threshold_changed:
            policy.generation += 1
        if fire_if_already_exceeded is None and threshold_changed:
            fire_if_already_exceeded = True
        if fire_if_already_exceeded is not None:
            policy.quiet_period_start = (
                None
                if fire_if_already_exceeded
                else organization_period(organization, timezone.now()).start
            )
        policy.threshold = new_threshold
        policy.enabled = new_enabled
        policy.notify_user = new_notify_user
        policy.save()
        if admins is not None:
            policy.admins.set(admins)
        audit_record(
            organization=organization,
            action="user_alert_policy.updated",
            target_type="user_alert_policy",
            target_id=policy.pk,
            before=before,
            after=_user_alert_policy_snapshot(policy, old_admins if admins is None else admins),
        )
        alerts_evaluate_organization(organization=organization)
    return policy
