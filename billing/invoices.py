"""The SQL of invoices (SPEC §11): what of a period is invoiced, and an
invoice made exactly once.

What of a period's overage is invoiced lives on the period's total row
(`OrganizationUsage.invoiced`, `invoiced_through`), beside `used` and
`drawn`, so that the write path reads all it needs in one statement. Every
caller holds that row's lock (the write moved it, or the period-end job
took it with `ledger.lock_organization_total`): an invoice and the row's
`invoiced` move in one transaction, and the row's conditional UPDATE
(`invoiced` as read) is the second guard; the unique index of the
`period_end` invoice is the third.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import Field, QuerySet

from accounts.models import Organization
from billing.balance import overage_of
from billing.models import BillingThreshold, Invoice, OrganizationUsage
from billing.periods import Period
from billing.sqlvalues import credits_param, credits_result, moment_param, moment_result
from config import rawsql
from config.money import amount_of

ZERO = Decimal(0)
INVOICE = Invoice._meta.db_table
ORGANIZATION_USAGE = OrganizationUsage._meta.db_table


@dataclass(frozen=True)
class PeriodInvoicing:
    """A period's figures for invoicing, read under its total row's lock."""

    used: Decimal
    drawn: Decimal
    invoiced: Decimal
    invoiced_through: datetime | None
    threshold: Decimal | None  # the enabled billing threshold's amount

    def overage(self, allowance: Decimal | None) -> Decimal:
        return overage_of(used=self.used, allowance=allowance, drawn=self.drawn)

    def uninvoiced(self, allowance: Decimal | None) -> Decimal:
        """Credits of the overage not invoiced yet (never below 0: a raised
        allowance does not take back what was invoiced).
        """
        return max(self.overage(allowance) - self.invoiced, ZERO)


def period_invoicing(*, organization_id: int, period_start: datetime) -> PeriodInvoicing:
    """The period's total row and the enabled billing threshold: one query."""
    rows = rawsql.fetch_all(
        f"""
        SELECT u.used, u.drawn, u.invoiced, u.invoiced_through, t.amount
        FROM (SELECT 1 AS one) AS one
        LEFT JOIN {ORGANIZATION_USAGE} u
            ON u.organization_id = %s AND u.period_start = %s
        LEFT JOIN {BillingThreshold._meta.db_table} t
            ON t.organization_id = %s AND t.enabled
        """,
        [organization_id, moment_param(period_start), organization_id],
    )
    used, drawn, invoiced, invoiced_through, threshold = rows[0]
    return PeriodInvoicing(
        used=ZERO if used is None else credits_result(used),
        drawn=ZERO if drawn is None else credits_result(drawn),
        invoiced=ZERO if invoiced is None else credits_result(invoiced),
        invoiced_through=moment_result(invoiced_through),
        threshold=None if threshold is None else credits_result(threshold),
    )


def invoice_insert(
    *,
    organization: Organization,
    period: Period,
    reason: str,
    state: PeriodInvoicing,
    credits: Decimal,
    now: datetime,
) -> Invoice | None:
    """Invoice `credits` of the period at the organization's price, covering
    from where the last invoice ended to `now` (or the period's end), and
    count them invoiced on the period's row. None if this was already done
    (the period's `period_end` invoice exists, or `invoiced` moved since
    `state` was read).
    """
    assert organization.credit_price is not None
    assert credits > 0
    covered_from = state.invoiced_through or period.start
    covered_through = max(period.end if reason == "period_end" else now, covered_from)
    invoice = Invoice(
        organization=organization,
        reason=reason,
        period_start=period.start,
        covered_from=covered_from,
        covered_through=covered_through,
        credits=credits,
        amount=amount_of(credits, organization.credit_price),
        currency=organization.currency,
        created_at=now,
    )
    names = (
        "organization",
        "reason",
        "period_start",
        "covered_from",
        "covered_through",
        "credits",
        "amount",
        "currency",
        "created_at",
    )
    fields: list[Field[Any, Any]] = [
        Invoice._meta.get_field(name)  # type: ignore[misc]
        for name in names
    ]
    columns = ", ".join(str(field.column) for field in fields)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {INVOICE} ({columns}) VALUES ({", ".join(["%s"] * len(fields))})
            ON CONFLICT DO NOTHING
            RETURNING id
            """,
            [
                field.get_db_prep_save(getattr(invoice, field.attname), connection)
                for field in fields
            ],
        )
        inserted = cursor.fetchone()
        if inserted is None:
            return None
        cursor.execute(
            f"""
            UPDATE {ORGANIZATION_USAGE}
            SET invoiced = invoiced + %s, invoiced_through = %s
            WHERE organization_id = %s AND period_start = %s AND invoiced = %s
            """,
            [
                credits_param(credits),
                moment_param(covered_through),
                organization.pk,
                moment_param(period.start),
                credits_param(state.invoiced),
            ],
        )
        # Under the row's lock nothing moves `invoiced` between the read and
        # here; if something ever did, no invoice may stand without its count.
        assert cursor.rowcount == 1, "the period's invoiced credits moved under its lock"
    invoice.pk = inserted[0]
    invoice._state.adding = False
    return invoice


def invoices_of(*, organization: Organization) -> QuerySet[Invoice]:
    return Invoice.objects.filter(organization=organization)


def invoice_get(*, organization: Organization, invoice_id: int) -> Invoice | None:
    """One invoice of this organization, or None: tenancy in one place."""
    return invoices_of(organization=organization).filter(pk=invoice_id).first()


def threshold_and_invoices_of_period(
    *, organization: Organization, period: Period
) -> tuple[BillingThreshold | None, list[Invoice]]:
    """The billing threshold (None if never set) and the period's invoices,
    in one query written as SQL: the Limits & Alerts page shows both.
    """
    rows = rawsql.fetch_all(
        f"""
        SELECT {rawsql.columns(BillingThreshold, "t")}, {rawsql.columns(Invoice, "i")}
        FROM (SELECT 1 AS one) AS one
        LEFT JOIN {BillingThreshold._meta.db_table} t ON t.organization_id = %s
        LEFT JOIN {Invoice._meta.db_table} i
            ON i.organization_id = %s AND i.period_start = %s
        ORDER BY i.covered_from, i.id
        """,
        [organization.pk, organization.pk, moment_param(period.start)],
    )
    split = rawsql.column_count(BillingThreshold)
    first = rows[0]
    threshold = rawsql.instance(BillingThreshold, first[:split]) if first[0] is not None else None
    invoices = [rawsql.instance(Invoice, row[split:]) for row in rows if row[split] is not None]
    return threshold, invoices


def invoices_of_period(*, organization: Organization, period: Period) -> list[Invoice]:
    return list(
        invoices_of(organization=organization)
        .filter(period_start=period.start)
        .order_by("covered_from", "id")
    )
