"""Settling (SPEC §12): what a change on a plan means for each organization
on it, worked out off the request, by chunks of organizations, reading only
those on the plan; safe to run twice, as firings are recorded once.

- A new or changed plan alert (alerts/services/plan_alerts.py): where an
  organization's usage is already past it, it fires; a copy made only for
  future crossings keeps quiet for the period instead.
- A change of the plan's values (allowance, default per-user limit, price):
  every organization that uses the plan's value has its alerts evaluated
  (and its balance, and its invoice schedule), as when it changes its own.

Each change is queued as a row (PlanAlert.revision, PlanChange); the task
asked for on commit settles it at once, and the beat settles, within a
minute, whatever a lost task left.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from celery import shared_task
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.models import Organization, Plan
from alerts.models import OrganizationAlert, PlanAlert, PlanChange
from alerts.services.credits import balance_reevaluate
from alerts.services.invoicing import invoice_schedule_ensure
from alerts.services.rules import alerts_evaluate_organization, crossed, threshold_credits
from billing.meter_selectors import ORGANIZATION_KEY
from billing.models import MeterUsage, OrganizationUsage
from billing.periods import Period, organization_period
from config.dbretry import retry_on_conflict

logger = logging.getLogger(__name__)

SETTLE_CHUNK = 500
# The organization's own value that, when set, hides the plan's.
OWN_VALUE_OF = {
    "credit_allowance": "own_credit_allowance",
    "credit_price": "own_credit_price",
}


@shared_task(ignore_result=True)
def settle_plan_alert(plan_alert_id: int) -> int:
    return plan_alert_settle(plan_alert_id)


@shared_task(ignore_result=True)
def settle_plan_change(change_id: int) -> int:
    return plan_change_settle(change_id)


def plans_settle_due() -> int:
    """Settle every plan alert and plan change not settled yet (the beat)."""
    due = PlanAlert.objects.filter(settled_revision__lt=F("revision")).values_list("pk", flat=True)
    settled = sum(plan_alert_settle(plan_alert_id) for plan_alert_id in due)
    changes = PlanChange.objects.filter(settled_at__isnull=True).order_by("pk")
    return settled + sum(
        plan_change_settle(change_id) for change_id in changes.values_list("pk", flat=True)
    )


def plan_changed(*, plan: Plan, fields: list[str]) -> PlanChange:
    """Queue the settling of a change of the plan's values, inside the
    transaction that made it; a worker starts on it once committed.
    """
    change = PlanChange.objects.create(plan=plan, fields=fields)
    change_id = change.pk
    transaction.on_commit(lambda: settle_plan_change.delay(change_id))
    return change


def plan_change_settle(change_id: int) -> int:
    """Evaluate, for every organization on the plan that uses a value the
    change moved, its alerts (and its balance, its invoice schedule) as if
    it had changed that value itself. Returns how many organizations.
    """
    change = PlanChange.objects.filter(pk=change_id, settled_at__isnull=True).first()
    if change is None:
        return 0
    organizations = Organization.objects.filter(plan_id=change.plan_id)
    moved = frozenset(change.fields)
    if moved <= OWN_VALUE_OF.keys():  # not the default limit: see limit_default_in_force
        hides_every_one = Q()
        for field in moved:
            hides_every_one &= Q(**{f"{OWN_VALUE_OF[field]}__isnull": False})
        organizations = organizations.exclude(hides_every_one)
    ids = list(organizations.order_by("pk").values_list("pk", flat=True))
    for start in range(0, len(ids), SETTLE_CHUNK):
        chunk = Organization.objects.filter(pk__in=ids[start : start + SETTLE_CHUNK])
        for organization in chunk.select_related("plan"):
            _evaluate(organization, moved)
    PlanChange.objects.filter(pk=change.pk).update(settled_at=timezone.now())
    logger.info(
        "Settled change %s of plan %s: %s organizations", change.pk, change.plan_id, len(ids)
    )
    return len(ids)


def plan_alert_settle(plan_alert_id: int, *, now: Any = None) -> int:
    """For each organization whose copy follows the plan alert and is on:
    where usage is already past it, fire it (an `only_future` copy not yet
    settled keeps quiet for the period instead). Reads only the copies of
    this plan alert, by chunks. Safe to run twice: firings are recorded
    once. Returns how many organizations were past it.
    """
    plan_alert = PlanAlert.objects.filter(pk=plan_alert_id).first()
    if plan_alert is None or plan_alert.settled_revision >= plan_alert.revision:
        return 0
    revision = plan_alert.revision
    now = now or timezone.now()
    organization_ids = list(
        OrganizationAlert.objects.filter(plan_alert=plan_alert)
        .order_by("organization_id")
        .values_list("organization_id", flat=True)
    )
    past = 0
    for start in range(0, len(organization_ids), SETTLE_CHUNK):
        past += _settle_chunk(plan_alert, organization_ids[start : start + SETTLE_CHUNK], now)
    PlanAlert.objects.filter(pk=plan_alert.pk, settled_revision__lt=revision).update(
        settled_revision=revision
    )
    logger.info("Settled plan alert %s: %s organizations past it", plan_alert.pk, past)
    return past


def _settle_chunk(plan_alert: PlanAlert, organization_ids: list[int], now: Any) -> int:
    copies = {
        copy.organization_id: copy
        for copy in OrganizationAlert.objects.filter(
            plan_alert=plan_alert,
            organization_id__in=organization_ids,
            overridden=False,
            enabled=True,
        ).select_related("organization__plan")
    }
    periods = {
        organization_id: organization_period(copy.organization, now)
        for organization_id, copy in copies.items()
    }
    values = _values_now(plan_alert, periods)
    quiet: list[tuple[int, Any]] = []
    to_fire: list[Organization] = []
    for organization_id, copy in copies.items():
        period = periods[organization_id]
        if copy.meter_id is None:
            allowance = period.allowance(copy.organization.credit_allowance)
            threshold = threshold_credits(copy, allowance)
        else:
            threshold = copy.threshold
        if not crossed(None, values.get(organization_id, Decimal(0)), threshold):
            continue
        if copy.only_future_pending:
            quiet.append((copy.pk, period.start))
        else:
            to_fire.append(copy.organization)
    with transaction.atomic():
        for copy_id, period_start in quiet:
            OrganizationAlert.objects.filter(pk=copy_id, only_future_pending=True).update(
                quiet_period_start=period_start, only_future_pending=False
            )
        OrganizationAlert.objects.filter(
            plan_alert=plan_alert, organization_id__in=organization_ids, only_future_pending=True
        ).update(only_future_pending=False)
    for organization in to_fire:
        _evaluate(organization)
    return len(quiet) + len(to_fire)


@retry_on_conflict
def _evaluate(organization: Organization, moved: frozenset[str] = frozenset()) -> None:
    """The organization's alerts, as after a change of its own configuration;
    its balance and invoice schedule too if the plan's allowance or price moved.
    """
    with transaction.atomic():
        alerts_evaluate_organization(organization=organization)
        if "credit_allowance" in moved:
            balance_reevaluate(organization=organization)
        if "credit_price" in moved:
            invoice_schedule_ensure(organization=organization)


def _values_now(plan_alert: PlanAlert, periods: dict[int, Period]) -> dict[int, Decimal]:
    """Each organization's value this period of what the plan alert watches:
    one query for the chunk.
    """
    if not periods:
        return {}
    pairs = [(organization_id, period.start) for organization_id, period in periods.items()]
    rows: Iterable[tuple[int, Any, Decimal]]
    if plan_alert.meter_id is None:
        rows = OrganizationUsage.objects.filter(
            organization_id__in=[o for o, _ in pairs],
            period_start__in={start for _, start in pairs},
        ).values_list("organization_id", "period_start", "used")
    else:
        rows = MeterUsage.objects.filter(
            meter_id=plan_alert.meter_id,
            member_key=ORGANIZATION_KEY,
            organization_id__in=[o for o, _ in pairs],
            period_start__in={start for _, start in pairs},
        ).values_list("organization_id", "period_start", "value")
    wanted = set(pairs)
    return {
        organization_id: value
        for organization_id, period_start, value in rows
        if (organization_id, period_start) in wanted
    }
