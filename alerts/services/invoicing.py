"""Money in the write path and at the period's end (SPEC §11): what a write
did to the period's spend and invoice total (for the `spend` and
`invoice_total` alerts), threshold invoices, the billing threshold, and the
`period_end` invoice made by the beat task. docs/money.md says why each is
exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from accounts.audit import audit_record
from accounts.models import Organization
from alerts.events import credit_event_write
from alerts.models import INVOICE_CREATED
from billing import ledger
from billing.balance import overage_of
from billing.invoices import PeriodInvoicing, invoice_insert, period_invoicing
from billing.models import BillingThreshold, Invoice, InvoiceReason, InvoiceSchedule
from billing.money import MoneyChange
from billing.periods import Period, organization_period
from billing.sqlvalues import moment_param
from config.credits import format_credits
from config.dbretry import retry_on_conflict
from config.errors import InvalidInput
from config.money import amount_of

ZERO = Decimal(0)
# No threshold invoice this close to a period's end: what is left goes to
# its `period_end` invoice a day later at most (SPEC §11).
NO_THRESHOLD_INVOICE_BEFORE_END = timedelta(hours=24)


def money_on_usage(
    *,
    organization: Organization,
    period: Period,
    used_before: Decimal,
    used_after: Decimal,
    drawn: Decimal,
    now: datetime,
) -> MoneyChange | None:
    """After a write moved the period's total (whose row it holds): the
    period's usage and overage either side of it, and a threshold invoice if
    the uninvoiced part of the invoice total reached the billing threshold.
    `drawn`: what the write drew from grants. Without a price, nothing (and
    no statement: the price is on the organization the write was given).
    """
    price = organization.credit_price
    if price is None:
        return None
    state = period_invoicing(organization_id=organization.pk, period_start=period.start)
    allowance = period.allowance(organization.credit_allowance)
    overage_after = state.overage(allowance)
    overage_before = overage_of(used=used_before, allowance=allowance, drawn=state.drawn - drawn)
    _threshold_invoice(organization, period, state, allowance, now)
    return MoneyChange(
        price=price,
        currency=organization.currency,
        used_before=used_before,
        used_after=used_after,
        overage_before=overage_before,
        overage_after=overage_after,
    )


def threshold_invoicing_open(period: Period, now: datetime) -> bool:
    """Threshold invoices are made in the current period, up to its last 24 hours."""
    return now in period and now < period.end - NO_THRESHOLD_INVOICE_BEFORE_END


def _threshold_invoice(
    organization: Organization,
    period: Period,
    state: PeriodInvoicing,
    allowance: Decimal | None,
    now: datetime,
) -> Invoice | None:
    """One invoice for all of the uninvoiced overage once its amount reaches
    the threshold, however many multiples of it one write passed.
    """
    if state.threshold is None or not threshold_invoicing_open(period, now):
        return None
    assert organization.credit_price is not None
    uninvoiced = state.uninvoiced(allowance)
    if uninvoiced <= 0 or amount_of(uninvoiced, organization.credit_price) < state.threshold:
        return None
    return _issue(organization, period, InvoiceReason.THRESHOLD, state, uninvoiced, now)


def _issue(
    organization: Organization,
    period: Period,
    reason: str,
    state: PeriodInvoicing,
    credits: Decimal,
    now: datetime,
) -> Invoice | None:
    invoice = invoice_insert(
        organization=organization,
        period=period,
        reason=reason,
        state=state,
        credits=credits,
        now=max(now, timezone.now()),
    )
    if invoice is not None:
        credit_event_write(
            organization, INVOICE_CREATED, invoice_event_data(invoice), email_admins=True
        )
    return invoice


def invoice_event_data(invoice: Invoice) -> dict[str, Any]:
    """`invoice.created`'s data (with `organization`, added by the outbox)."""
    return {
        "invoice_id": invoice.pk,
        "reason": invoice.reason,
        "period_start": invoice.period_start,
        "covered_from": invoice.covered_from,
        "covered_through": invoice.covered_through,
        "credits": invoice.credits,
        "amount": invoice.amount,
        "currency": invoice.currency,
        "created_at": invoice.created_at,
    }


# The period's end


PERIOD_END_BATCH = 200


def invoice_schedule_ensure(*, organization: Organization, now: datetime | None = None) -> None:
    """The organization has a price: close its periods from now on. Inserted
    once; an existing row, which the beat task may hold locked, is not touched.
    """
    if (
        organization.credit_price is None
        or InvoiceSchedule.objects.filter(organization=organization).exists()
    ):
        return
    period = organization_period(organization, now or timezone.now())
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {InvoiceSchedule._meta.db_table} (organization_id, period_start, due_at)
            VALUES (%s, %s, %s)
            ON CONFLICT (organization_id) DO NOTHING
            """,
            [organization.pk, moment_param(period.start), moment_param(period.end)],
        )


def invoices_close_periods(*, now: datetime | None = None) -> int:
    """The beat task: the organizations whose period ended by `now`
    (InvoiceSchedule.due_at, indexed), each in its own transaction. Safe to
    run twice at once: the schedule row is claimed under its lock, and the
    `period_end` invoice is unique per period.
    """
    now = now or timezone.now()
    due = list(
        InvoiceSchedule.objects.filter(due_at__lte=now)
        .order_by("due_at")
        .values_list("organization_id", flat=True)[:PERIOD_END_BATCH]
    )
    for organization in Organization.objects.filter(pk__in=due):
        _close_period(organization, now)
    return len(due)


@retry_on_conflict
def _close_period(organization: Organization, now: datetime) -> Invoice | None:
    """The `period_end` invoice of the period that ended (for what is left
    uninvoiced, if the organization has a price), then the next period.
    """
    with transaction.atomic():
        schedule = (
            InvoiceSchedule.objects.select_for_update()
            .filter(organization=organization, due_at__lte=now)
            .first()
        )
        if schedule is None:  # another run closed it
            return None
        period = organization_period(organization, schedule.period_start)
        invoice = None
        if organization.credit_price is not None:
            ledger.lock_organization_total(
                organization_id=organization.pk, period_start=period.start
            )
            state = period_invoicing(organization_id=organization.pk, period_start=period.start)
            left = state.uninvoiced(period.allowance(organization.credit_allowance))
            if left > 0:
                invoice = _issue(organization, period, InvoiceReason.PERIOD_END, state, left, now)
        following = organization_period(organization, period.end)
        schedule.period_start, schedule.due_at = following.start, following.end
        schedule.save(update_fields=["period_start", "due_at"])
    return invoice


# The billing threshold


def billing_threshold_get(*, organization: Organization) -> BillingThreshold:
    """The organization's billing threshold; an unsaved, disabled one if none yet."""
    return BillingThreshold.objects.filter(organization=organization).first() or BillingThreshold(
        organization=organization
    )


@dataclass(frozen=True)
class BillingThresholdInput:
    enabled: bool
    amount: Decimal | None


def billing_threshold_settings(threshold: BillingThreshold) -> dict[str, Any]:
    return {"enabled": threshold.enabled, "amount": threshold.amount}


@retry_on_conflict
def billing_threshold_set(
    *, organization: Organization, settings: BillingThresholdInput
) -> BillingThreshold:
    """Set the billing threshold. It invoices from the next write on."""
    if settings.enabled and settings.amount is None:
        raise InvalidInput(
            "Say at which amount to invoice.", code="amount_required", field="amount"
        )
    if settings.amount is not None and settings.amount <= 0:
        raise InvalidInput("amount must be greater than 0.", code="invalid", field="amount")
    with transaction.atomic():
        threshold, _ = BillingThreshold.objects.select_for_update().get_or_create(
            organization=organization
        )
        before = _snapshot(threshold)
        threshold.enabled, threshold.amount = settings.enabled, settings.amount
        threshold.save()
        audit_record(
            organization=organization,
            action="billing_threshold.updated",
            target_type="billing_threshold",
            target_id=threshold.pk,
            before=before,
            after=_snapshot(threshold),
        )
    return threshold


def _snapshot(threshold: BillingThreshold) -> dict[str, Any]:
    return {
        "enabled": threshold.enabled,
        "amount": None if threshold.amount is None else format_credits(threshold.amount),
    }
