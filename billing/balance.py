"""The credit balance (SPEC §9): allowance left this period plus what the
active grants hold. `balance_of` is its one definition; the write path
(alerts/services/consume.py, ingest.py) computes it from the totals and the
drawdown it just did, the pages and the API read it with `credit_balance_get`.
And the gate's decision on the totals and the balance as they stand
(`usage_check`, `gate_decision_now`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.utils import timezone

from accounts.models import Membership, Organization
from billing.grants import active_grants, grants_remaining
from billing.models import (
    CreditGrant,
    CreditHold,
    HoldStatus,
    MemberUsage,
    OrganizationUsage,
    Source,
)
from billing.periods import Period, organization_period
from billing.rules import Decision, gate_decide
from billing.selectors import LimitRules, limit_rules_get
from billing.sqlvalues import credits_result, moment_param
from config import rawsql

ZERO = Decimal(0)


def allowance_left(allowance: Decimal | None, used: Decimal) -> Decimal:
    """What is left of a period's allowance (none: nothing)."""
    return max((allowance or ZERO) - used, ZERO)


def balance_of(
    *, allowance: Decimal | None, used: Decimal, grants_remaining: Decimal, any_grant: bool
) -> Decimal | None:
    """The balance; None for an organization with no allowance that never had
    a grant (it is not limited as a whole).
    """
    if allowance is None and not any_grant:
        return None
    return allowance_left(allowance, used) + grants_remaining


def overage_of(*, used: Decimal, allowance: Decimal | None, drawn: Decimal) -> Decimal:
    """A period's overage: its usage that neither its allowance nor grants
    covered (`drawn`: what grants covered of it). The one definition, for the
    write path (alerts/services/invoicing.py) and every reader.
    """
    return max(used - (allowance or ZERO) - drawn, ZERO)


def period_overage(*, organization: Organization, period: Period) -> tuple[Decimal, Decimal]:
    """A period's usage and overage as they stand: one query."""
    used, drawn = (
        OrganizationUsage.objects.filter(organization=organization, period_start=period.start)
        .values_list("used", "drawn")
        .first()
    ) or (ZERO, ZERO)
    allowance = period.allowance(organization.credit_allowance)
    return used, overage_of(used=used, allowance=allowance, drawn=drawn)


def covered_by_allowance(
    allowance: Decimal | None, used_before: Decimal, credits: Decimal
) -> Decimal:
    """The part of a write of `credits` that the period's allowance covers."""
    return min(credits, allowance_left(allowance, used_before))


@dataclass(frozen=True)
class CreditBalance:
    balance: Decimal | None
    allowance: Decimal | None
    allowance_remaining: Decimal | None
    grants_remaining: Decimal
    overage: Decimal
    period: Period
    grants: list[CreditGrant]
    used: Decimal = ZERO


def credit_balance_get(*, organization: Organization, now: datetime) -> CreditBalance:
    """The balance as it stands at `now`, with the active grants in drawdown order."""
    period = organization_period(organization, now)
    allowance = period.allowance(organization.credit_allowance)
    used, overage = period_overage(organization=organization, period=period)
    grants = list(active_grants(organization_id=organization.pk, now=now))
    grants_remaining = sum((grant.remaining for grant in grants), ZERO)
    any_grant = bool(grants) or CreditGrant.objects.filter(organization=organization).exists()
    return CreditBalance(
        balance=balance_of(
            allowance=allowance, used=used, grants_remaining=grants_remaining, any_grant=any_grant
        ),
        allowance=allowance,
        allowance_remaining=None if allowance is None else allowance_left(allowance, used),
        grants_remaining=grants_remaining,
        overage=overage,
        period=period,
        grants=grants,
        used=used,
    )


def balance_now(
    *, organization: Organization, period: Period, used: Decimal, now: datetime
) -> Decimal | None:
    """The balance for the gate's check, from the period's usage: one query
    of the grants, none when the organization keeps no balance.
    """
    allowance = period.allowance(organization.credit_allowance)
    if organization.credit_balance_kept_since is None:
        return None if allowance is None else allowance_left(allowance, used)
    grants = grants_remaining(organization_id=organization.pk, now=now)
    any_grant = grants > 0 or CreditGrant.objects.filter(organization=organization).exists()
    return balance_of(allowance=allowance, used=used, grants_remaining=grants, any_grant=any_grant)


def usage_check(
    *,
    organization: Organization,
    membership: Membership,
    credits: Decimal,
    source: str = Source.ASSISTANT,
) -> Decision:
    """The gate's decision for spending `credits` now, without recording anything."""
    return gate_decision_now(
        organization=organization,
        membership=membership,
        credits=credits,
        source=source,
        period=organization_period(organization, timezone.now()),
        rules=limit_rules_get(organization=organization, membership_ids=[membership.pk]),
    )


def gate_decision_now(
    *,
    organization: Organization,
    membership: Membership,
    credits: Decimal,
    source: str,
    period: Period,
    rules: LimitRules,
    now: datetime | None = None,
) -> Decision:
    """The gate's rule applied to the totals as they stand: a check, and why
    the database refused a consume (alerts/services/consume.py), at the
    consume's own moment (a grant starts or ends counting at an instant).
    """
    now = now or timezone.now()
    totals = gate_totals(organization=organization, membership=membership, period=period, now=now)
    balance = balance_now(organization=organization, period=period, used=totals.used, now=now)
    return gate_decide(
        cost=credits,
        counts=rules.counts(source),
        member_counted=totals.member_counted,
        member_limit=rules.limit_for(membership.pk),
        organization_used_now=totals.used + totals.held,
        balance=None if balance is None else max(balance - totals.held, ZERO),
        block_when_exhausted=organization.block_when_exhausted,
        period=period,
    )


def gate_refusal(
    *,
    organization: Organization,
    membership: Membership,
    credits: Decimal,
    source: str,
    period: Period,
    rules: LimitRules,
    now: datetime,
) -> Decision:
    """Why the database refused a guarded write (a consume, a hold): the same
    rule applied to the totals now, inside the refused write's transaction.
    """
    decision = gate_decision_now(
        organization=organization,
        membership=membership,
        credits=credits,
        source=source,
        period=period,
        rules=rules,
        now=now,
    )
    assert not decision.allowed, "the database refused what the rule allows"
    return decision


@dataclass(frozen=True)
class GateTotals:
    """What the gate weighs a cost against: the member's counted usage with
    the credits held toward their limit, the organization's usage, and what
    its holds hold (SPEC §13), holds already due left out.
    """

    member_counted: Decimal
    used: Decimal
    held: Decimal


def gate_totals(
    *, organization: Organization, membership: Membership, period: Period, now: datetime
) -> GateTotals:
    """The gate's totals as they stand at `now`: one query."""
    member_counted, member_held, used, held, member_due, organization_due = rawsql.fetch_all(
        f"""
        SELECT m.counted, m.held, o.used, o.held, due.member_due, due.organization_due
        FROM (SELECT 1 AS one) AS one
        LEFT JOIN {MemberUsage._meta.db_table} AS m
            ON m.membership_id = %s AND m.period_start = %s
        LEFT JOIN {OrganizationUsage._meta.db_table} AS o
            ON o.organization_id = %s AND o.period_start = %s
        LEFT JOIN (
            SELECT SUM(CASE WHEN counted AND membership_id = %s THEN credits ELSE 0 END)
                    AS member_due,
                SUM(credits) AS organization_due
            FROM {CreditHold._meta.db_table}
            WHERE organization_id = %s AND period_start = %s AND status = %s
                AND expires_at <= %s
        ) AS due ON 1 = 1
        """,
        [
            membership.pk,
            moment_param(period.start),
            organization.pk,
            moment_param(period.start),
            membership.pk,
            organization.pk,
            moment_param(period.start),
            HoldStatus.HELD.value,
            moment_param(now),
        ],
    )[0]

    def amount(value: object) -> Decimal:
        return ZERO if value is None else credits_result(value)

    return GateTotals(
        member_counted=amount(member_counted) + amount(member_held) - amount(member_due),
        used=amount(used),
        held=amount(held) - amount(organization_due),
    )
