"""The credit balance's use cases (SPEC §9): grants created and voided, what
time does to grants, and what a change of the balance sets off — the auto
top-up and the balance alerts — in the transaction of the change.

Every change of an organization's balance first locks its total row for the
current period (`ledger.lock_organization_total`; consume and ingest hold it
already, having just moved it). That one lock orders every change of the
balance, so "the balance crossed" is seen by exactly one writer: one top-up
per crossing, one firing per alert and crossing (the conditional UPDATEs of
`_balance_alerts` are the second guard).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from accounts.models import Organization
from alerts.events import credit_event_write
from alerts.models import (
    BALANCE_FIRING_KINDS,
    CREDIT_GRANT_CREATED,
    CREDIT_GRANT_EXPIRING,
    TOP_UP_LIMIT_REACHED,
    BalanceAlert,
    BalanceAlertStatus,
    BalanceAlertType,
    Firing,
)
from alerts.services.firing import Candidate, fire
from alerts.services.platform_alerts import platform_balance_changed
from billing import ledger
from billing.balance import allowance_left, balance_now, balance_of, covered_by_allowance
from billing.grants import draw
from billing.models import AutoTopUp, BalanceCheck, CreditGrant, GrantKind
from billing.periods import Period, organization_period
from billing.selectors import organization_used
from billing.services import grants as grant_service
from billing.services.grants import GrantInput
from billing.sqlvalues import moment_param
from config import rawsql
from config.dbretry import retry_on_conflict

logger = logging.getLogger(__name__)
ZERO = Decimal(0)


def balance_condition(alert: BalanceAlert, balance: Decimal) -> bool:
    """Whether the balance is where the alert fires: 0 (depleted), below its
    threshold (dropped), above 0 (recovered).
    """
    if alert.type == BalanceAlertType.DEPLETED:
        return balance <= 0
    if alert.type == BalanceAlertType.DROPPED:
        assert alert.threshold is not None
        return balance < alert.threshold
    return balance > 0


def fell_below(before: Decimal | None, after: Decimal, threshold: Decimal) -> bool:
    """A downward crossing: from at or above `threshold` to below it."""
    return before is not None and before >= threshold > after


@dataclass(frozen=True)
class BalanceChange:
    """What a write did to an organization's balance (None: it has none)."""

    organization: Organization
    period: Period
    before: Decimal | None
    after: Decimal | None
    now: datetime
    drawn: Decimal = ZERO  # what the write drew from grants
    held: Decimal = ZERO  # what the organization's holds hold (SPEC §13)

    def refuses(self, credits: Decimal) -> bool:
        """Whether an organization that blocks refuses spending `credits` (the
        balance before the write, less what holds hold, is below it).
        """
        return (
            self.organization.block_when_exhausted
            and self.before is not None
            and credits + self.held > self.before
        )


def draw_beyond_allowance(
    *,
    organization: Organization,
    period: Period,
    used_before: Decimal,
    credits: Decimal,
    now: datetime,
    all_or_nothing: bool,
    held: Decimal = ZERO,
) -> BalanceChange:
    """Draw from the grants the part of a write of `credits` that the
    period's allowance left does not cover (billing/grants.py), under the
    organization's total row lock that consume and ingest have just taken;
    the balance before and after. With `all_or_nothing`, nothing is drawn
    unless the grants cover it all and what the organization's holds hold
    (`held`) beyond the allowance left after it (then `refuses` says so).
    """
    allowance = period.allowance(organization.credit_allowance)
    drawn = draw(
        organization_id=organization.pk,
        period_start=period.start,
        credits=credits - covered_by_allowance(allowance, used_before, credits),
        now=now,
        all_or_nothing=all_or_nothing,
        reserve=max(held - allowance_left(allowance, used_before + credits), ZERO),
    )

    def balance(used: Decimal, grants: Decimal) -> Decimal | None:
        return balance_of(
            allowance=allowance, used=used, grants_remaining=grants, any_grant=drawn.any_grant
        )

    return BalanceChange(
        organization,
        period,
        before=balance(used_before, drawn.available),
        after=balance(used_before + credits, drawn.remaining_after),
        now=now,
        drawn=drawn.drawn,
        held=held,
    )


def balance_changed(change: BalanceChange) -> Decimal | None:
    """Top up if the balance fell below the auto top-up's threshold, then move
    the balance alerts. Inside the change's transaction, the organization's
    total row locked. Returns the balance after (with any top-up).
    """
    if change.after is None:
        return None
    alerts, top_up = _balance_configuration(change.organization)
    after = change.after
    if (
        top_up is not None
        and top_up.threshold is not None
        and fell_below(change.before, after, top_up.threshold)
    ):
        grant = _top_up(change, top_up)
        if grant is not None:
            after += grant.credits
    _balance_alerts(change, alerts, after)
    platform_balance_changed(
        organization=change.organization,
        period=change.period,
        before=change.before,
        after=after,
        now=change.now,
    )
    return after


def _balance_configuration(
    organization: Organization,
) -> tuple[list[BalanceAlert], AutoTopUp | None]:
    """The balance alerts and the enabled auto top-up: one query."""
    rows = rawsql.fetch_all(
        f"""
        SELECT {rawsql.columns(AutoTopUp, "t")}, {rawsql.columns(BalanceAlert, "a")}
        FROM (SELECT 1 AS one) AS one
        LEFT JOIN {AutoTopUp._meta.db_table} t ON t.organization_id = %s AND t.enabled
        LEFT JOIN {BalanceAlert._meta.db_table} a ON a.organization_id = %s
        ORDER BY a.id
        """,
        [organization.pk, organization.pk],
    )
    split = rawsql.column_count(AutoTopUp)
    first = rows[0]
    top_up = rawsql.instance(AutoTopUp, first[:split]) if first[0] is not None else None
    alerts = [rawsql.instance(BalanceAlert, row[split:]) for row in rows if row[split] is not None]
    for alert in alerts:
        alert.organization = organization
    return alerts, top_up


def _balance_alerts(
    change: BalanceChange, alerts: list[BalanceAlert], balance: Decimal
) -> list[Firing]:
    """Fire the armed alerts whose condition the balance meets; re-arm those
    in alarm whose condition it left. Each move is a conditional UPDATE on
    the alert's status, so that it happens once.
    """
    candidates = []
    for alert in alerts:
        meets = balance_condition(alert, balance)
        if meets and alert.status == BalanceAlertStatus.ARMED:
            fired = _claim_firing(alert, change.now)
            if fired is not None:
                candidates.append(
                    Candidate(
                        kind=BALANCE_FIRING_KINDS[BalanceAlertType(alert.type)],
                        dedupe_key=f"balance:{alert.pk}:{fired}",
                        threshold=alert.threshold or ZERO,
                        threshold_credits=alert.threshold or ZERO,
                        value=balance,
                        balance_alert=alert,
                    )
                )
        elif not meets and alert.status == BalanceAlertStatus.IN_ALARM:
            BalanceAlert.objects.filter(pk=alert.pk, status=BalanceAlertStatus.IN_ALARM).update(
                status=BalanceAlertStatus.ARMED, updated_at=change.now
            )
    return fire(change.organization, change.period, candidates)


def _claim_firing(alert: BalanceAlert, now: datetime) -> int | None:
    """Armed to in alarm, once: the number of this firing, or None if another
    writer claimed it first.
    """
    rows = rawsql.fetch_all(
        f"""
        UPDATE {BalanceAlert._meta.db_table}
        SET status = %s, triggered_at = %s, fired = fired + 1, updated_at = %s
        WHERE id = %s AND status = %s
        RETURNING fired
        """,
        [
            BalanceAlertStatus.IN_ALARM.value,
            moment_param(now),
            moment_param(now),
            alert.pk,
            BalanceAlertStatus.ARMED.value,
        ],
    )
    return rows[0][0] if rows else None


def balance_alert_initial_status(alert: BalanceAlert, balance: Decimal | None) -> str:
    """A new or edited alert whose condition already holds starts in alarm,
    without firing: it fires on the next crossing.
    """
    if balance is not None and balance_condition(alert, balance):
        return BalanceAlertStatus.IN_ALARM
    return BalanceAlertStatus.ARMED


def _top_up(change: BalanceChange, top_up: AutoTopUp) -> CreditGrant | None:
    """One `top_up` grant, unless `max_per_period` were made this period: then
    admins are told, once per period.
    """
    organization, period, now = change.organization, change.period, change.now
    start = moment_param(period.start)
    counted = rawsql.fetch_all(
        f"""
        UPDATE {AutoTopUp._meta.db_table}
        SET top_ups = CASE WHEN period_start = %s THEN top_ups + 1 ELSE 1 END, period_start = %s
        WHERE organization_id = %s AND enabled
            AND (period_start IS NULL OR period_start <> %s OR top_ups < max_per_period)
        RETURNING top_ups
        """,
        [start, start, organization.pk, start],
    )
    if not counted:
        if (
            AutoTopUp.objects.filter(organization=organization)
            .exclude(limit_noticed_period_start=period.start)
            .update(limit_noticed_period_start=period.start)
        ):
            credit_event_write(
                organization,
                TOP_UP_LIMIT_REACHED,
                {"max_per_period": top_up.max_per_period, "period_start": period.start},
                email_admins=True,
            )
        return None
    assert top_up.credits is not None
    grant = grant_service.grant_insert(
        organization=organization,
        grant=GrantInput(
            kind=GrantKind.TOP_UP,
            credits=top_up.credits,
            priority=top_up.priority,
            effective_at=now,
            expires_at=(
                now + timedelta(days=top_up.expires_after_days)
                if top_up.expires_after_days
                else None
            ),
            note=f"Auto top-up {counted[0][0]} of {top_up.max_per_period} this period",
        ),
        now=now,
    )
    assert grant is not None
    _grant_created(organization, grant, email_admins=True)
    return grant


def _grant_created(organization: Organization, grant: CreditGrant, *, email_admins: bool) -> None:
    credit_event_write(
        organization, CREDIT_GRANT_CREATED, grant_event_data(grant), email_admins=email_admins
    )


def grant_event_data(grant: CreditGrant) -> dict[str, object]:
    return {
        "grant_id": grant.pk,
        "kind": grant.kind,
        "credits": grant.credits,
        "remaining": grant.remaining,
        "priority": grant.priority,
        "effective_at": grant.effective_at,
        "expires_at": grant.expires_at,
    }


def _locked_balance(
    organization: Organization, now: datetime
) -> tuple[Period, Decimal, Decimal | None]:
    """Lock the organization's total for the current period (the balance's
    lock); the period, its usage and the balance read under the lock.
    """
    period = organization_period(organization, now)
    used = ledger.lock_organization_total(
        organization_id=organization.pk, period_start=period.start
    )
    return period, used, balance_now(organization=organization, period=period, used=used, now=now)


@dataclass(frozen=True)
class GrantCreated:
    grant: CreditGrant
    replayed: bool


@retry_on_conflict
def credit_grant_create(*, organization: Organization, grant: GrantInput) -> GrantCreated:
    """Create a grant (the host, over the API, or staff in the admin). A
    repeated idempotency key gets the first grant back; another body, 409.
    """
    now = timezone.now()
    grant_service.grant_validate(grant, now=now)
    earlier = grant_service.grant_replayed(organization=organization, grant=grant, now=now)
    if earlier is not None:
        return GrantCreated(earlier, replayed=True)
    with transaction.atomic():
        period, used, before = _locked_balance(organization, now)
        row = grant_service.grant_insert(organization=organization, grant=grant, now=now)
        if row is None:  # a concurrent request with the same key won
            transaction.set_rollback(True)
        else:
            _grant_created(organization, row, email_admins=False)
            after = balance_now(organization=organization, period=period, used=used, now=now)
            balance_changed(BalanceChange(organization, period, before, after, now))
    if row is None:
        earlier = grant_service.grant_replayed(organization=organization, grant=grant, now=now)
        assert earlier is not None
        return GrantCreated(earlier, replayed=True)
    return GrantCreated(row, replayed=False)


@retry_on_conflict
def credit_grant_void(*, organization: Organization, grant_id: int) -> CreditGrant:
    """Void a grant: its `remaining` to 0 at once. Voiding a voided grant
    changes nothing.
    """
    now = timezone.now()
    with transaction.atomic():
        grant_service.grant_get(organization=organization, grant_id=grant_id)  # 404 first
        period, used, before = _locked_balance(organization, now)
        grant, voided = grant_service.grant_void(
            organization=organization, grant_id=grant_id, now=now
        )
        if voided:
            after = balance_now(organization=organization, period=period, used=used, now=now)
            balance_changed(BalanceChange(organization, period, before, after, now))
    return grant


def credit_balance_watch(*, organization: Organization) -> None:
    """The organization now has a balance alert or an auto top-up: keep its
    balance from now on, and look at it again at the period's end.
    """
    now = timezone.now()
    grant_service.balance_kept(organization=organization, now=now)
    grant_service.check_due_by(
        organization=organization, moment=organization_period(organization, now).end
    )


def current_balance(organization: Organization) -> Decimal | None:
    """The balance as it stands (for configuration changes: no lock)."""
    now = timezone.now()
    period = organization_period(organization, now)
    used = organization_used(organization=organization, period=period)
    return balance_now(organization=organization, period=period, used=used, now=now)


def balance_reevaluate(*, organization: Organization) -> None:
    """After a change of settings that moves the balance (the allowance, the
    anchor day, blocking), inside its transaction: the balance alerts, under
    the balance lock. No top-up: one is made when usage or time takes the
    balance below its threshold, not when an admin changes the allowance.
    """
    if organization.credit_balance_kept_since is None:
        return
    now = timezone.now()
    period, _, balance = _locked_balance(organization, now)
    balance_changed(BalanceChange(organization, period, None, balance, now))


BALANCE_CHECK_BATCH = 200


def credit_balances_check(*, now: datetime | None = None) -> int:
    """The periodic job: every organization whose balance changes with time by
    now (BalanceCheck.due_at, indexed), each in its own transaction. Safe to
    run twice at once: expiries, notices and firings are each claimed by a
    conditional UPDATE.
    """
    now = now or timezone.now()
    due = list(
        BalanceCheck.objects.filter(due_at__lte=now)
        .order_by("due_at")
        .values_list("organization_id", flat=True)[:BALANCE_CHECK_BATCH]
    )
    for organization in Organization.objects.filter(pk__in=due):
        _balance_check(organization, now)
    return len(due)


@retry_on_conflict
def _balance_check(organization: Organization, now: datetime) -> None:
    with transaction.atomic():
        period, used, _ = _locked_balance(organization, now)
        expired = grant_service.grants_expire(organization=organization, now=now)
        after = balance_now(organization=organization, period=period, used=used, now=now)
        before = None if after is None else after + expired
        balance_changed(BalanceChange(organization, period, before, after, now))
        for grant in grant_service.grants_due_for_notice(organization=organization, now=now):
            credit_event_write(
                organization,
                CREDIT_GRANT_EXPIRING,
                {
                    "grant_id": grant.pk,
                    "remaining": grant.remaining,
                    "expires_at": grant.expires_at,
                },
                email_admins=True,
            )
        watched = BalanceAlert.objects.filter(organization=organization).exists() or (
            AutoTopUp.objects.filter(organization=organization, enabled=True).exists()
        )
        BalanceCheck.objects.filter(organization=organization).update(
            due_at=grant_service.next_check_at(organization=organization, now=now, watched=watched)
        )
