"""The SQL of credit grants (SPEC §9): drawing them down, exactly.

A drawdown is one statement: it locks the organization's active grants in
drawdown order (priority, then earliest `expires_at` with never-expiring
last, then oldest), splits the amount over them with a running sum, lowers
their `remaining` and writes one ledger entry per grant it drew. "Active"
is decided by the moment of the write (`effective_at <= now < expires_at`),
so an expired grant is never drawn, whether or not the expiry job has run.

Lock order (after billing/ledger.py's: keys, members, the organization's
total): the grants, in drawdown order. Every writer that draws holds the
organization's total row for the current period first, so drawdowns of one
organization never interleave; voids and the expiry job lock grants in the
same order (and nothing else first), so they cannot deadlock with a
drawdown. The CHECK `remaining >= 0` is the last word should anything else
go wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import connection
from django.db.models import F, Q, QuerySet, Sum

from billing.models import (
    CreditGrant,
    CreditLedgerEntry,
    GrantStatus,
    LedgerEntryType,
    OrganizationUsage,
)
from billing.sqlvalues import credits_param, credits_result, moment_param

CREDIT_GRANT = CreditGrant._meta.db_table
CREDIT_LEDGER = CreditLedgerEntry._meta.db_table
ORGANIZATION_USAGE = OrganizationUsage._meta.db_table
ZERO = Decimal(0)

DRAWDOWN_ORDER = ("priority", F("expires_at").asc(nulls_last=True), "created_at", "id")
_ORDER_SQL = "priority, expires_at NULLS LAST, created_at, id"


def active_at(now: datetime) -> Q:
    """The grants that count at `now`: the one definition of "active"."""
    return Q(voided_at__isnull=True, remaining__gt=0, effective_at__lte=now) & (
        Q(expires_at__isnull=True) | Q(expires_at__gt=now)
    )


def status_is(status: str, now: datetime) -> Q:
    """The grants whose `status_at(now)` is `status`, as a filter (the API's
    list filters by it).
    """
    if status == GrantStatus.VOIDED:
        return Q(voided_at__isnull=False)
    if status == GrantStatus.PENDING:
        return Q(voided_at__isnull=True, effective_at__gt=now)
    started = Q(voided_at__isnull=True, effective_at__lte=now)
    if status == GrantStatus.EXPIRED:
        return started & Q(expires_at__lte=now)
    unexpired = Q(expires_at__isnull=True) | Q(expires_at__gt=now)
    if status == GrantStatus.DEPLETED:
        return started & unexpired & Q(remaining=0)
    if status == GrantStatus.ACTIVE:
        return active_at(now)
    raise ValueError(f"Not a grant status: {status!r}")


def active_grants(*, organization_id: int, now: datetime) -> QuerySet[CreditGrant]:
    return CreditGrant.objects.filter(active_at(now), organization_id=organization_id).order_by(
        *DRAWDOWN_ORDER
    )


def grants_remaining(*, organization_id: int, now: datetime) -> Decimal:
    total = active_grants(organization_id=organization_id, now=now).aggregate(
        total=Sum("remaining")
    )["total"]
    return total if total is not None else ZERO


@dataclass(frozen=True)
class Draw:
    """What a drawdown found and took."""

    available: Decimal  # the active grants' remaining credits, before
    drawn: Decimal
    any_grant: bool  # whether the organization has ever had a grant

    @property
    def remaining_after(self) -> Decimal:
        return self.available - self.drawn


def draw(
    *,
    organization_id: int,
    period_start: datetime,
    credits: Decimal,
    now: datetime,
    all_or_nothing: bool,
    reserve: Decimal = ZERO,
) -> Draw:
    """Draw `credits` from the organization's active grants, in drawdown order.

    With `all_or_nothing` (a consume of an organization that blocks), nothing
    is drawn unless the grants cover all of it and `reserve` more (what its
    holds need of the grants, SPEC §13); otherwise as much as they
    hold (the rest is the period's overage). `credits` 0 draws nothing and
    tells what is available. What is drawn is added to the period's `drawn`
    (its total row, which the caller holds) in the same statement.
    """
    if connection.vendor != "postgresql":
        return _draw_one_by_one(
            organization_id, period_start, credits, now, all_or_nothing, reserve
        )
    params = {
        "period_start": moment_param(period_start),
        "organization": organization_id,
        "credits": credits_param(credits),
        "now": moment_param(now),
        "all_or_nothing": all_or_nothing,
        "required": credits_param(credits + reserve),
        "drawdown": LedgerEntryType.DRAWDOWN.value,
    }
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH active AS (
                SELECT id, remaining, priority, expires_at, created_at FROM {CREDIT_GRANT}
                WHERE organization_id = %(organization)s AND voided_at IS NULL
                    AND remaining > 0 AND effective_at <= %(now)s
                    AND (expires_at IS NULL OR expires_at > %(now)s)
                ORDER BY {_ORDER_SQL}
                FOR UPDATE
            ),
            total AS (SELECT COALESCE(SUM(remaining), 0) AS available FROM active),
            ordered AS (
                SELECT id, remaining,
                    SUM(remaining) OVER (ORDER BY {_ORDER_SQL}) - remaining AS drawn_before
                FROM active
            ),
            taken AS (
                SELECT ordered.id,
                    LEAST(ordered.remaining, %(credits)s::numeric - ordered.drawn_before) AS credits
                FROM ordered, total
                WHERE ordered.drawn_before < %(credits)s::numeric
                    AND (NOT %(all_or_nothing)s OR total.available >= %(required)s::numeric)
            ),
            updated AS (
                UPDATE {CREDIT_GRANT} AS g SET remaining = g.remaining - taken.credits
                FROM taken WHERE g.id = taken.id
                RETURNING g.id, taken.credits
            ),
            entries AS (
                INSERT INTO {CREDIT_LEDGER} (organization_id, grant_id, type, credits, at)
                SELECT %(organization)s, id, %(drawdown)s, -credits, %(now)s FROM updated
            ),
            period_total AS (
                UPDATE {ORGANIZATION_USAGE}
                SET drawn = drawn + (SELECT COALESCE(SUM(credits), 0) FROM updated)
                WHERE organization_id = %(organization)s AND period_start = %(period_start)s
                    AND EXISTS (SELECT 1 FROM updated)
            )
            SELECT (SELECT available FROM total),
                (SELECT COALESCE(SUM(credits), 0) FROM updated),
                EXISTS (SELECT 1 FROM {CREDIT_GRANT} WHERE organization_id = %(organization)s)
            """,
            params,
        )
        available, drawn, any_grant = cursor.fetchone()
    return Draw(
        available=credits_result(available), drawn=credits_result(drawn), any_grant=any_grant
    )


def _draw_one_by_one(
    organization_id: int,
    period_start: datetime,
    credits: Decimal,
    now: datetime,
    all_or_nothing: bool,
    reserve: Decimal = ZERO,
) -> Draw:
    """The same drawdown for SQLite (the local demo database), which writes
    one transaction at a time: no locks to take, a grant at a time.
    """
    grants = list(active_grants(organization_id=organization_id, now=now))
    available = sum((grant.remaining for grant in grants), ZERO)
    any_grant = bool(grants) or CreditGrant.objects.filter(organization_id=organization_id).exists()
    if all_or_nothing and available < credits + reserve:
        return Draw(available=available, drawn=ZERO, any_grant=any_grant)
    left = credits
    for grant in grants:
        if left <= 0:
            break
        take = min(grant.remaining, left)
        CreditGrant.objects.filter(pk=grant.pk).update(remaining=F("remaining") - take)
        CreditLedgerEntry.objects.create(
            organization_id=organization_id,
            grant=grant,
            type=LedgerEntryType.DRAWDOWN,
            credits=-take,
            at=now,
        )
        left -= take
    if credits - left:
        OrganizationUsage.objects.filter(
            organization_id=organization_id, period_start=period_start
        ).update(drawn=F("drawn") + (credits - left))
    return Draw(available=available, drawn=credits - left, any_grant=any_grant)
