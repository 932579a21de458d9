"""Plan alerts (SPEC §12): an alert on a plan that every organization on it
inherits, with no migration, and that fires and is recorded per
organization exactly like the organization's own alerts.

Each organization on the plan holds a *copy* (an OrganizationAlert with
`plan_alert` set), so the write path, firing, status and history are the
ones of its own alerts, and a write reads only its own organization's
alerts however many organizations share the plan. The copies are written in
bulk, one INSERT … SELECT for the whole plan, in the transaction that adds
the plan alert: from its commit on, every organization on the plan has it.

What depends on each organization's usage — firing where it is already
passed, or keeping quiet there when the alert is only for future crossings
— is *settling*, done off the request (alerts/services/plan_settling.py).
Until a copy made `only_future` is settled, a change of configuration does
not fire it, while a crossing does (alerts/services/rules.py): so whatever
the order, an organization already past never fires it and one that
crosses later does.

Lock order: the plan's row, then organizations' rows. Adding or changing a
plan alert locks the plan's row for update; an organization joining a plan
locks it for share first (`plan_lock_shared`), so that it copies the plan's
alerts as they stand and none is added meanwhile without it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, F
from django.utils import timezone

from accounts.audit import audit_record
from accounts.models import Organization, Plan
from alerts.models import (
    MAX_ORGANIZATION_ALERTS,
    Firing,
    OrganizationAlert,
    PlanAlert,
    Recipients,
    ThresholdType,
)
from alerts.services.configuration import (
    alert_snapshot,
    quiet_if_already_passed,
    validate_meter_threshold,
    validate_threshold,
)
from alerts.services.plan_settling import settle_plan_alert
from alerts.services.rules import alerts_evaluate_organization
from billing.models import Meter
from config.dbretry import retry_on_conflict
from config.errors import InvalidInput, NotFound

PLAN_ALERT_TYPES = (ThresholdType.PERCENTAGE, ThresholdType.ABSOLUTE)


def validate_plan_alert(threshold_type: str, threshold: Decimal, meter: Meter | None) -> None:
    if threshold_type not in PLAN_ALERT_TYPES:
        raise InvalidInput(
            "A plan alert's threshold_type is 'percentage' or 'absolute'.",
            code="invalid",
            field="threshold_type",
        )
    validate_threshold(threshold_type, threshold)
    validate_meter_threshold(meter, threshold_type)


@retry_on_conflict
def plan_alert_create(
    *,
    plan: Plan,
    threshold_type: str,
    threshold: Decimal,
    meter: Meter | None = None,
    only_future: bool = False,
) -> PlanAlert:
    """Add an alert to `plan`: every organization on it has it from the
    commit on. Where it is already passed it fires at once (settling, off
    the request), unless `only_future`: then only organizations that cross
    it from now on fire it this period.

    Refused if the plan has 25 alerts on this meter, or if an organization
    on the plan has: the limit of 25 counts inherited alerts.
    """
    validate_plan_alert(threshold_type, threshold, meter)
    with transaction.atomic():
        _lock_plan(plan)
        _lock_organizations_of(plan)
        refuse_past_the_plan_cap(plan, meter)
        plan_alert = PlanAlert.objects.create(
            plan=plan,
            meter=meter,
            threshold_type=threshold_type,
            threshold=threshold,
            only_future=only_future,
        )
        _copy_to_organizations_of(plan, plan_alert)
        _settle_soon(plan_alert)
    return plan_alert


@retry_on_conflict
def plan_alert_update(
    *,
    plan_alert: PlanAlert,
    threshold_type: str | None = None,
    threshold: Decimal | None = None,
    enabled: bool | None = None,
) -> PlanAlert:
    """Change the plan's alert, and with it every organization's copy that
    the organization has not changed. A new threshold re-arms the copies
    like an edit of the organization's own alert: where usage is already
    past it, it fires at once (settling). Turned off, no copy fires; turned
    on again, the copies already past fire unless they fired this period.
    """
    with transaction.atomic():
        _lock_plan(plan_alert.plan)
        try:
            plan_alert.refresh_from_db()
        except PlanAlert.DoesNotExist:
            raise NotFound("No such plan alert.", code="plan_alert_not_found") from None
        new_type = threshold_type or plan_alert.threshold_type
        new_threshold = threshold if threshold is not None else plan_alert.threshold
        validate_plan_alert(new_type, new_threshold, plan_alert.meter)
        rearm = new_type != plan_alert.threshold_type or new_threshold != plan_alert.threshold
        turned_on = enabled is True and not plan_alert.enabled
        plan_alert.threshold_type, plan_alert.threshold = new_type, new_threshold
        if enabled is not None:
            plan_alert.enabled = enabled
        # Not the settling marks: a settling task may be writing them.
        plan_alert.save(update_fields=["threshold_type", "threshold", "enabled", "updated_at"])
        copies = OrganizationAlert.objects.filter(plan_alert=plan_alert, overridden=False)
        changes: dict[str, Any] = {
            "threshold_type": new_type,
            "threshold": new_threshold,
            "enabled": plan_alert.enabled,
            "updated_at": timezone.now(),
        }
        if rearm:
            changes |= {
                "generation": F("generation") + 1,
                "quiet_period_start": None,
                "only_future_pending": False,
            }
        copies.update(**changes)
        if (rearm or turned_on) and plan_alert.enabled:
            _settle_soon(plan_alert)
    return plan_alert


@retry_on_conflict
def plan_alert_delete(*, plan_alert: PlanAlert) -> None:
    """Remove the alert from the plan and from every organization that has
    it, changed or not. Their firings stay in each organization's history.
    """
    with transaction.atomic():
        _lock_plan(plan_alert.plan)
        copies = OrganizationAlert.objects.filter(plan_alert=plan_alert)
        # In bulk: the ORM's cascade would load every copy into Python.
        Firing.objects.filter(alert__in=copies).update(alert=None)
        OrganizationAlert.admins.through.objects.filter(organizationalert__in=copies).delete()
        copies._raw_delete(copies.db)
        PlanAlert.objects.filter(pk=plan_alert.pk).delete()


@retry_on_conflict
def inherited_alert_reset(*, alert: OrganizationAlert) -> OrganizationAlert:
    """The organization's copy takes the plan's alert as it stands again,
    and follows it from then on; a different threshold re-arms it.
    """
    with transaction.atomic():
        try:
            alert.refresh_from_db(from_queryset=OrganizationAlert.objects.select_for_update())
        except OrganizationAlert.DoesNotExist:
            raise NotFound(
                f"No alert {alert.pk} in this organization.", code="alert_not_found"
            ) from None
        plan_alert = alert.plan_alert
        if plan_alert is None:
            raise InvalidInput(
                "This alert is the organization's own: there is no plan alert to reset it to.",
                code="not_inherited",
            )
        before = alert_snapshot(alert, list(alert.admins.all()))
        if (alert.threshold_type, alert.threshold) != (
            plan_alert.threshold_type,
            plan_alert.threshold,
        ):
            alert.generation += 1
            alert.quiet_period_start = None
        alert.threshold_type, alert.threshold = plan_alert.threshold_type, plan_alert.threshold
        alert.enabled, alert.notify = plan_alert.enabled, Recipients.ALL_ADMINS
        alert.overridden = False
        alert.save()
        alert.admins.clear()
        audit_record(
            organization=alert.organization,
            action="alert.reset",
            target_type="organization_alert",
            target_id=alert.pk,
            before=before,
            after=alert_snapshot(alert, []),
        )
        alerts_evaluate_organization(organization=alert.organization)
    return alert


def plan_lock_shared(plan_ids: Iterable[int]) -> None:
    """Hold these plans' rows for share until the transaction ends: an
    organization joining a plan takes its alerts as they stand.
    """
    ids = sorted(set(plan_ids))
    # SQLite (the local demo database) takes one writer at a time and has
    # no row locks.
    if ids and connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id FROM {Plan._meta.db_table} WHERE id = ANY(%s) ORDER BY id FOR SHARE",
                [ids],
            )


def inherited_alerts_sync(*, organization: Organization) -> None:
    """After the organization's plan changed, in the same transaction (its
    row and the new plan's held): drop the alerts of any other plan, changed
    or not, and copy the plan's. The caller evaluates the alerts afterwards:
    a plan alert already passed fires, unless it is only for the future.
    """
    inherited = OrganizationAlert.objects.filter(
        organization=organization, plan_alert__isnull=False
    )
    others = inherited
    if organization.plan_id is not None:
        others = inherited.exclude(plan_alert__plan_id=organization.plan_id)
    for alert in others.select_related("meter"):
        audit_record(
            organization=organization,
            action="alert.deleted",
            target_type="organization_alert",
            target_id=alert.pk,
            before=alert_snapshot(alert, list(alert.admins.all())),
        )
        alert.delete()
    if organization.plan_id is None:
        return
    have = set(inherited.values_list("plan_alert_id", flat=True))
    missing = [
        plan_alert
        for plan_alert in PlanAlert.objects.filter(plan_id=organization.plan_id)
        if plan_alert.pk not in have
    ]
    _refuse_past_the_cap(organization, missing)
    for plan_alert in missing:
        copy = OrganizationAlert.objects.create(
            organization=organization,
            plan_alert=plan_alert,
            meter=plan_alert.meter,
            threshold_type=plan_alert.threshold_type,
            threshold=plan_alert.threshold,
            enabled=plan_alert.enabled,
        )
        if plan_alert.only_future:
            quiet_if_already_passed(copy)


def _refuse_past_the_cap(organization: Organization, adding: Sequence[PlanAlert]) -> None:
    counts: dict[int | None, int] = dict(
        OrganizationAlert.objects.filter(organization=organization)
        .values_list("meter_id")
        .annotate(n=Count("id"))
        .values_list("meter_id", "n")
    )
    for plan_alert in adding:
        counts[plan_alert.meter_id] = counts.get(plan_alert.meter_id, 0) + 1
        if counts[plan_alert.meter_id] > MAX_ORGANIZATION_ALERTS:
            raise InvalidInput(
                f"With the plan's alerts this organization would have more than "
                f"{MAX_ORGANIZATION_ALERTS} alerts on "
                f"{plan_alert.meter.name if plan_alert.meter else 'credits'}: "
                "delete some of its own first.",
                code="too_many_alerts",
                field="plan",
            )


def _lock_plan(plan: Plan) -> None:
    Plan.objects.select_for_update().filter(pk=plan.pk).first()


def _lock_organizations_of(plan: Plan) -> None:
    """Hold the plan's organizations' rows, as creating an organization's own
    alert does (accounts.services.organization_cap_check): neither passes the
    limit of 25 past the other. NO KEY: the writes' foreign keys still pass.
    """
    if connection.vendor != "postgresql":  # SQLite: one writer at a time
        return
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT count(*) FROM (
                SELECT 1 FROM {Organization._meta.db_table} WHERE plan_id = %s
                ORDER BY id FOR NO KEY UPDATE
            ) AS locked
            """,
            [plan.pk],
        )


def refuse_past_the_plan_cap(plan: Plan, meter: Meter | None) -> None:
    """Refuse one more alert on `meter` for the plan: a plan has 25 at most,
    and so has each organization on it, inherited alerts counted.
    """
    if PlanAlert.objects.filter(plan=plan, meter=meter).count() >= MAX_ORGANIZATION_ALERTS:
        raise InvalidInput(
            f"A plan can have at most {MAX_ORGANIZATION_ALERTS} alerts per meter.",
            code="too_many_alerts",
            field="threshold",
        )
    full = list(
        OrganizationAlert.objects.filter(organization__plan=plan, meter=meter)
        .values("organization__slug")
        .annotate(n=Count("id"))
        .filter(n__gte=MAX_ORGANIZATION_ALERTS)
        .order_by("organization__slug")
        .values_list("organization__slug", flat=True)
    )
    if full:
        named = ", ".join(full[:5]) + (f" and {len(full) - 5} more" if len(full) > 5 else "")
        raise InvalidInput(
            f"{len(full)} organizations on the plan already have {MAX_ORGANIZATION_ALERTS} "
            f"alerts on {meter.name if meter else 'credits'} ({named}): the limit counts "
            "inherited alerts.",
            code="too_many_alerts",
            field="threshold",
        )


def _copy_to_organizations_of(plan: Plan, plan_alert: PlanAlert) -> None:
    """Every organization on the plan gets its copy: one statement."""
    alert_table = OrganizationAlert._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {alert_table}
                (organization_id, plan_alert_id, meter_id, threshold_type, threshold, notify,
                 generation, created_at, updated_at, overridden, enabled, only_future_pending)
            SELECT o.id, %(plan_alert)s, %(meter)s, %(type)s, %(threshold)s, %(notify)s,
                1, %(now)s, %(now)s, false, %(enabled)s, %(pending)s
            FROM {Organization._meta.db_table} o WHERE o.plan_id = %(plan)s
            ORDER BY o.id
            """,
            {
                "plan_alert": plan_alert.pk,
                "meter": plan_alert.meter_id,
                "type": plan_alert.threshold_type,
                "threshold": plan_alert.threshold,
                "notify": Recipients.ALL_ADMINS.value,
                "now": timezone.now(),
                "enabled": plan_alert.enabled,
                "pending": plan_alert.only_future,
                "plan": plan.pk,
            },
        )


def _settle_soon(plan_alert: PlanAlert) -> None:
    """Mark the plan alert as to settle, and ask a worker to, once committed
    (the beat does it within a minute if that task is lost).
    """
    PlanAlert.objects.filter(pk=plan_alert.pk).update(revision=F("revision") + 1)
    plan_alert.refresh_from_db(fields=["revision"])
    plan_alert_id = plan_alert.pk
    transaction.on_commit(lambda: settle_plan_alert.delay(plan_alert_id))
