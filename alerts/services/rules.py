"""When an alert fires: the one rule, and what each kind of alert asks of it.

An alert fires when the value it watches `crossed` its threshold: it was
below it and is now at or past it (`over_budget`, billing/rules.py, the
same test the gate and the member pages use). Two paths ask:

- `alerts_on_usage`, in the write path, inside the transaction that moved
  the totals: `before` and `after` are the totals either side of the write.
- `alerts_evaluate_organization`, after a change of configuration (an alert
  created or edited, the allowance, limits or alert policy changed, a role
  changed): `before` is None, as nothing has fired for the alert as it now
  stands, so whatever is at or past its threshold fires.

Each kind has one candidate builder below; `firing.fire` records the
candidates that have not fired yet (once, by their unique key) and writes
their notifications. A new kind of alert is one more builder, called from
both paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

from django.utils import timezone

from accounts.models import Organization
from alerts.forecast import forecast
from alerts.models import (
    MONEY_THRESHOLD_TYPES,
    Firing,
    FiringKind,
    OrganizationAlert,
    ThresholdType,
    UserAlertPolicy,
)
from alerts.platform_models import PlatformAlert
from alerts.services.firing import Candidate, fire
from alerts.services.platform_alerts import platform_alerts_evaluate, platform_alerts_on_usage
from alerts.thresholds import crossed, percent_of_allowance
from billing.meters import MeterChange, meter_values
from billing.models import CREDITS_METER, MemberUsage
from billing.money import MoneyChange, money_as_it_stands
from billing.periods import Period, organization_period
from billing.selectors import limit_rules_get, organization_used
from config import rawsql


@dataclass(frozen=True)
class MemberChange:
    """What one write did to one member's totals in one period."""

    membership_id: int
    used_before: Decimal
    used_after: Decimal
    counted_before: Decimal
    counted_after: Decimal
    limit: Decimal | None


@dataclass(frozen=True)
class UsageChange:
    """What one write did to an organization's totals in one period (`money`:
    None without a price).
    """

    organization: Organization
    period: Period
    used_before: Decimal
    used_after: Decimal
    members: Sequence[MemberChange] = ()
    meters: Sequence[MeterChange] = ()
    money: MoneyChange | None = None


def threshold_credits(alert: OrganizationAlert, allowance: Decimal | None) -> Decimal | None:
    """The alert's threshold in credits; None for a percentage without allowance
    and for money alerts (`money_alert_candidates`).
    """
    if alert.threshold_type in MONEY_THRESHOLD_TYPES:
        return None
    if alert.threshold_type == ThresholdType.ABSOLUTE:
        return alert.threshold
    return percent_of_allowance(alert.threshold, allowance)


def organization_alert_candidates(
    alerts: Sequence[OrganizationAlert],
    *,
    period: Period,
    allowance: Decimal | None,
    before: Decimal | None,
    after: Decimal,
    meters: Sequence[MeterChange] = (),
) -> list[Candidate]:
    """The organization's usage against each of its alerts (SPEC §4), and
    its meters' values against the alerts on them (SPEC §10: what this write
    changed; `before` None as for credits when evaluating). An alert created
    not to fire for a period already passed is quiet until the next one.
    """
    by_meter = {change.meter.pk: change for change in meters}
    candidates = []
    for alert in alerts:
        meter = CREDITS_METER
        if alert.threshold_type == ThresholdType.FORECAST:
            continue  # forecast_alert_candidates
        if alert.meter_id is None:
            threshold = threshold_credits(alert, allowance)
            value_before, value_after = before, after
        elif alert.meter_id in by_meter:
            change = by_meter[alert.meter_id]
            meter, threshold = change.meter.key, alert.threshold
            value_before = None if before is None else change.before
            value_after = change.after
        else:
            continue
        if alert.only_future_pending and value_before is None:
            continue  # not yet checked for being already past: only a crossing fires it
        if alert.quiet_period_start != period.start and crossed(
            value_before, value_after, threshold
        ):
            assert threshold is not None
            candidates.append(
                Candidate(
                    kind=FiringKind.ORGANIZATION_ALERT,
                    dedupe_key=alert.firing_key(period),
                    threshold=alert.threshold,
                    threshold_credits=threshold,
                    value=value_after,
                    alert=alert,
                    meter=meter,
                )
            )
    return candidates


def forecast_alert_candidates(
    alerts: Sequence[OrganizationAlert],
    *,
    period: Period,
    allowance: Decimal | None,
    used: Decimal,
    now: datetime,
) -> list[Candidate]:
    """The usage projected at the period's end against each forecast alert
    (SPEC §15), from what the write has in hand: no query. It fires the
    first time the projection reaches the threshold, then keeps quiet for
    the period (`fire` marks it), so that the writes after it cost nothing.
    """
    candidates = []
    pace = None
    for alert in alerts:
        if alert.threshold_type != ThresholdType.FORECAST:
            continue
        threshold = threshold_credits(alert, allowance)
        if threshold is None or alert.quiet_period_start == period.start:
            continue
        pace = pace or forecast(period, now, used)
        if pace is None or pace.projected < threshold:
            continue
        candidates.append(
            Candidate(
                kind=FiringKind.ORGANIZATION_ALERT,
                dedupe_key=alert.firing_key(period),
                threshold=alert.threshold,
                threshold_credits=threshold,
                value=used,
                alert=alert,
                projected=pace.projected,
                projected_at=pace.reached_at(threshold),
            )
        )
    return candidates


def money_watched(alert: OrganizationAlert, money: MoneyChange) -> tuple[Decimal | None, Decimal]:
    """What a money alert watches, before and after: spend or invoice total."""
    return money.spend() if alert.threshold_type == ThresholdType.SPEND else money.invoice_total()


def money_alert_candidates(
    alerts: Sequence[OrganizationAlert], *, period: Period, money: MoneyChange | None
) -> list[Candidate]:
    """Spend and invoice total against the `spend` and `invoice_total` alerts
    (SPEC §11); none without a price. The firing's `threshold_credits` and
    `value` are amounts of money, in `currency` (docs/money.md).
    """
    if money is None:
        return []
    candidates = []
    for alert in alerts:
        if alert.threshold_type not in MONEY_THRESHOLD_TYPES:
            continue
        before, after = money_watched(alert, money)
        if alert.quiet_period_start != period.start and crossed(before, after, alert.threshold):
            candidates.append(
                Candidate(
                    kind=FiringKind.ORGANIZATION_ALERT,
                    dedupe_key=alert.firing_key(period),
                    threshold=alert.threshold,
                    threshold_credits=alert.threshold,
                    value=after,
                    alert=alert,
                    currency=money.currency,
                )
            )
    return candidates


def user_alert_candidates(
    policy: UserAlertPolicy | None,
    *,
    period: Period,
    membership_id: int,
    before: Decimal | None,
    after: Decimal,
) -> list[Candidate]:
    """A member's usage against the per-user alert policy (SPEC §5)."""
    if policy is None or not crossed(before, after, policy.threshold):
        return []
    assert policy.threshold is not None
    return [
        Candidate(
            kind=FiringKind.USER_ALERT,
            dedupe_key=f"user_alert:{membership_id}:{period.start.isoformat()}:{policy.generation}",
            threshold=policy.threshold,
            threshold_credits=policy.threshold,
            value=after,
            membership_id=membership_id,
        )
    ]


def user_limit_candidates(
    *,
    period: Period,
    membership_id: int,
    limit: Decimal | None,
    before: Decimal | None,
    after: Decimal,
) -> list[Candidate]:
    """A member's counted usage against their limit (SPEC §6)."""
    if not crossed(before, after, limit):
        return []
    assert limit is not None
    return [
        Candidate(
            kind=FiringKind.USER_LIMIT,
            dedupe_key=f"user_limit:{membership_id}:{period.start.isoformat()}",
            threshold=limit,
            threshold_credits=limit,
            value=after,
            membership_id=membership_id,
        )
    ]


def alerts_on_usage(change: UsageChange) -> list[Firing]:
    """Fire what this write crossed. Runs inside the write's transaction; one
    query when nothing fires, whatever the number of events.
    """
    organization = change.organization
    alerts, policy, platform_alerts = _alert_configuration(organization)
    period = change.period
    candidates = organization_alert_candidates(
        alerts,
        period=period,
        allowance=period.allowance(organization.credit_allowance),
        before=change.used_before,
        after=change.used_after,
        meters=change.meters,
    )
    candidates += money_alert_candidates(alerts, period=period, money=change.money)
    candidates += forecast_alert_candidates(
        alerts,
        period=period,
        allowance=period.allowance(organization.credit_allowance),
        used=change.used_after,
        now=timezone.now(),
    )
    for member in change.members:
        candidates += user_alert_candidates(
            policy,
            period=period,
            membership_id=member.membership_id,
            before=member.used_before,
            after=member.used_after,
        )
        candidates += user_limit_candidates(
            period=period,
            membership_id=member.membership_id,
            limit=member.limit,
            before=member.counted_before,
            after=member.counted_after,
        )
    platform_alerts_on_usage(
        platform_alerts,
        organization=organization,
        period=period,
        used_before=change.used_before,
        used_after=change.used_after,
        now=timezone.now(),
    )
    return fire(organization, period, candidates)


def alerts_evaluate_organization(
    *, organization: Organization, now: datetime | None = None
) -> list[Firing]:
    """Fire every alert of the current period that is at or past its threshold
    and has not fired yet. For changes of configuration, not for each write.
    """
    now = now or timezone.now()
    period = organization_period(organization, now)
    alerts, policy, platform_alerts = _alert_configuration(organization)
    used = organization_used(organization=organization, period=period)
    platform_alerts_evaluate(
        platform_alerts, organization=organization, period=period, used=used, now=now
    )
    allowance = period.allowance(organization.credit_allowance)
    candidates = forecast_alert_candidates(
        alerts, period=period, allowance=allowance, used=used, now=now
    )
    candidates += organization_alert_candidates(
        alerts,
        period=period,
        allowance=allowance,
        before=None,
        after=used,
        meters=meter_values(
            organization=organization,
            period=period,
            meter_ids={alert.meter_id for alert in alerts if alert.meter_id is not None},
        ),
    )
    candidates += money_alert_candidates(
        alerts, period=period, money=money_as_it_stands(organization=organization, period=period)
    )
    # A policy saved not to tell members already past: only crossings (in
    # the write path) fire it this period.
    if (
        policy is not None
        and policy.threshold is not None
        and policy.quiet_period_start != period.start
    ):
        for membership_id, member_used in MemberUsage.objects.filter(
            organization=organization, period_start=period.start, used__gte=policy.threshold
        ).values_list("membership_id", "used"):
            candidates += user_alert_candidates(
                policy, period=period, membership_id=membership_id, before=None, after=member_used
            )
    # Every member at or past their limit was marked when they reached it
    # (billing/ledger.py, billing/services/limits.py): only those are read.
    reached = list(
        MemberUsage.objects.filter(
            organization=organization, period_start=period.start, limit_reached_at__isnull=False
        ).values_list("membership_id", "counted")
    )
    if reached:
        rules = limit_rules_get(organization=organization, membership_ids=[m for m, _ in reached])
        for membership_id, counted in reached:
            candidates += user_limit_candidates(
                period=period,
                membership_id=membership_id,
                limit=rules.limit_for(membership_id),
                before=None,
                after=counted,
            )
    return fire(organization, period, candidates)


class AlertConfiguration(NamedTuple):
    alerts: list[OrganizationAlert]
    policy: UserAlertPolicy | None
    platform_alerts: list[PlatformAlert]


# What the write path reads of an alert: not when it was made or changed.
ALERT_FIELDS = tuple(
    field.name
    for field in OrganizationAlert._meta.concrete_fields
    if field.name not in ("created_at", "updated_at")
)


def _alert_configuration(organization: Organization) -> AlertConfiguration:
    """The organization's alerts that are on, its enabled per-user alert
    policy and the enabled platform alerts whose scope takes it in (all
    organizations, or its plan), in one query written as SQL: every write
    runs it (see config/rawsql.py). Each kind comes as rows of its own
    (`part`: 0 the policy, 1 platform alerts, 2 alerts), so that none is
    repeated on another's rows and converted again.
    """
    policy_width = rawsql.column_count(UserAlertPolicy)
    alert_width = rawsql.column_count(OrganizationAlert, ALERT_FIELDS)
    platform_width = rawsql.column_count(PlatformAlert)
    # ORDER BY positions: part, then the alerts' threshold_type, threshold and id.
    alert_at = 2 + policy_width
    order = [
        alert_at + rawsql.column_index(OrganizationAlert, name, ALERT_FIELDS)
        for name in ("threshold_type", "threshold", "id")
    ]
    rows = rawsql.fetch_all(
        f"""
        SELECT 0 AS part, {rawsql.columns(UserAlertPolicy, "p")},
            {rawsql.typed_nulls(OrganizationAlert, ALERT_FIELDS)},
            {rawsql.typed_nulls(PlatformAlert)}
        FROM (SELECT 1 AS one) AS one
        LEFT JOIN {UserAlertPolicy._meta.db_table} p
            ON p.organization_id = %s AND p.enabled
        UNION ALL
        SELECT 1, {rawsql.nulls(policy_width + alert_width)}, {rawsql.columns(PlatformAlert, "pa")}
        FROM {PlatformAlert._meta.db_table} pa
        WHERE pa.enabled AND (pa.plan_id IS NULL OR pa.plan_id = %s)
        UNION ALL
        SELECT 2, {rawsql.nulls(policy_width)},
            {rawsql.columns(OrganizationAlert, "a", ALERT_FIELDS)}, {rawsql.nulls(platform_width)}
        FROM {OrganizationAlert._meta.db_table} a
        WHERE a.organization_id = %s AND a.enabled
        ORDER BY 1, {", ".join(str(position) for position in order)}
        """,
        [organization.pk, organization.plan_id, organization.pk],
    )
    first = rows[0][1:]
    policy = (
        rawsql.instance(UserAlertPolicy, first[:policy_width]) if first[0] is not None else None
    )
    alerts = []
    platform_alerts = []
    for part, *row in rows[1:]:
        if part == 2:
            alert = rawsql.instance(
                OrganizationAlert, row[policy_width : policy_width + alert_width], ALERT_FIELDS
            )
            alert.organization = organization
            alerts.append(alert)
        else:
            platform_alerts.append(rawsql.instance(PlatformAlert, row[-platform_width:]))
    return AlertConfiguration(alerts, policy, platform_alerts)
