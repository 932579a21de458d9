"""Platform alerts where usage or the balance changes (SPEC §12): which fire,
their firings recorded once per organization per period, and their
notifications written to the outbox in the same transaction.

Evaluated where an organization's usage or balance changes, never by
scanning organizations on a write:

- `platform_alerts_on_usage`, in the write's transaction (ingest, consume):
  the platform alerts that apply to the organization came with its own
  alerts in the one query of `rules._alert_configuration`, so a write that
  crosses nothing costs no query more. A threshold fires on the crossing
  rule of every alert (`crossed`); `balance_depleted` when the balance
  reaches 0 (for an organization that keeps no balance: its allowance left).
- `platform_balance_changed`, when the balance of an organization that keeps
  one (grants, SPEC §9) changes (alerts/services/credits.py): a query only
  when it reached 0.
- `platform_alerts_evaluate`, after a change of configuration
  (`alerts_evaluate_organization`) and for an alert new or changed
  (alerts/services/platform_config.py): what is at or past it fires.

Exactly once: each firing is inserted with ON CONFLICT DO NOTHING on its
unique (alert, organization, period start); only the transaction whose
insert went through writes its notifications.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.db import connection
from django.db.models import Q, QuerySet

from accounts.models import Organization
from alerts.models import Channel, Notification
from alerts.outbox import deliver_notification_on_commit
from alerts.platform_messages import PLATFORM_EMAIL, PLATFORM_EVENT, platform_event
from alerts.platform_models import PlatformAlert, PlatformFiring, PlatformThresholdType
from alerts.thresholds import crossed, percent_of_allowance
from billing.balance import allowance_left, balance_now
from billing.periods import Period
from billing.selectors import organization_used

ZERO = Decimal(0)
DEPLETED = PlatformThresholdType.BALANCE_DEPLETED


def balance_reached_zero(before: Decimal | None, after: Decimal | None) -> bool:
    """The balance is at 0 now and was above it (`before` None: not known,
    being at 0 is enough). The crossing rule on the balance used up: the
    credits spent beyond it (-balance) crossed 0.
    """
    if after is None:
        return False
    return crossed(None if before is None else -before, -after, ZERO)


def platform_threshold(alert: PlatformAlert, allowance: Decimal | None) -> Decimal | None:
    """The alert's threshold in credits this period; None for a percentage
    without an allowance (it never fires) and for `balance_depleted`.
    """
    if alert.threshold_type == PlatformThresholdType.ABSOLUTE:
        return alert.threshold
    if alert.threshold_type == PlatformThresholdType.PERCENTAGE and alert.threshold is not None:
        return percent_of_allowance(alert.threshold, allowance)
    return None


def usage_crossings(
    alerts: Sequence[PlatformAlert],
    *,
    allowance: Decimal | None,
    before: Decimal | None,
    after: Decimal,
) -> list[PlatformAlert]:
    """The percentage and absolute alerts the organization's usage crossed."""
    return [
        alert
        for alert in alerts
        if alert.threshold_type != DEPLETED
        and crossed(before, after, platform_threshold(alert, allowance))
    ]


def platform_alerts_on_usage(
    alerts: Sequence[PlatformAlert],
    *,
    organization: Organization,
    period: Period,
    used_before: Decimal,
    used_after: Decimal,
    now: datetime,
) -> list[PlatformFiring]:
    """In the write's transaction: fire what this change of usage crossed.
    No query unless something fires.
    """
    if not alerts:
        return []
    allowance = period.allowance(organization.credit_allowance)
    fired = usage_crossings(alerts, allowance=allowance, before=used_before, after=used_after)
    balance = None
    # An organization that keeps a balance is told of it by platform_balance_changed.
    if organization.credit_balance_kept_since is None and allowance is not None and now in period:
        balance = allowance_left(allowance, used_after)
        if balance_reached_zero(allowance_left(allowance, used_before), balance):
            fired += [alert for alert in alerts if alert.threshold_type == DEPLETED]
    return platform_fire(
        organization, period, fired, used=used_after, balance=balance, allowance=allowance, now=now
    )


def platform_alerts_evaluate(
    alerts: Sequence[PlatformAlert],
    *,
    organization: Organization,
    period: Period,
    used: Decimal,
    now: datetime,
) -> list[PlatformFiring]:
    """Fire what is at or past its threshold now (a change of configuration,
    a new or changed platform alert); what already fired this period does not.
    """
    if not alerts:
        return []
    allowance = period.allowance(organization.credit_allowance)
    fired = usage_crossings(alerts, allowance=allowance, before=None, after=used)
    balance = None
    depleted = [alert for alert in alerts if alert.threshold_type == DEPLETED]
    if depleted:
        balance = balance_now(organization=organization, period=period, used=used, now=now)
        if balance_reached_zero(None, balance):
            fired += depleted
    return platform_fire(
        organization, period, fired, used=used, balance=balance, allowance=allowance, now=now
    )


def platform_balance_changed(
    *,
    organization: Organization,
    period: Period,
    before: Decimal | None,
    after: Decimal | None,
    now: datetime,
) -> list[PlatformFiring]:
    """The balance of an organization that keeps one changed (a write, a
    grant, time): if it reached 0, fire the `balance_depleted` alerts that
    apply. Queries only then.
    """
    if not balance_reached_zero(before, after):
        return []
    alerts = list(platform_alerts_applying(organization).filter(threshold_type=DEPLETED))
    if not alerts:
        return []
    return platform_fire(
        organization,
        period,
        alerts,
        used=organization_used(organization=organization, period=period),
        balance=after,
        allowance=period.allowance(organization.credit_allowance),
        now=now,
    )


def platform_alerts_applying(organization: Organization) -> QuerySet[PlatformAlert]:
    """The enabled platform alerts whose scope takes the organization in."""
    return PlatformAlert.objects.filter(
        Q(plan__isnull=True) | Q(plan_id=organization.plan_id), enabled=True
    )


def platform_fire(
    organization: Organization,
    period: Period,
    alerts: Sequence[PlatformAlert],
    *,
    used: Decimal,
    balance: Decimal | None,
    allowance: Decimal | None,
    now: datetime,
) -> list[PlatformFiring]:
    """Record the firings that were not recorded yet for this period, and
    write their notifications.
    """
    if not alerts:
        return []
    rows = [
        PlatformFiring(
            platform_alert=alert,
            organization=organization,
            plan_id=organization.plan_id,
            threshold_type=alert.threshold_type,
            threshold=alert.threshold,
            value=used,
            allowance=allowance,
            balance=balance if alert.threshold_type == DEPLETED else None,
            period_start=period.start,
            period_end=period.end,
            triggered_at=now,
        )
        for alert in alerts
    ]
    recorded = _insert_once(rows)
    if recorded:
        _notifications_write(organization, recorded)
    return recorded


_COLUMNS = (
    "platform_alert",
    "organization",
    "plan",
    "threshold_type",
    "threshold",
    "value",
    "allowance",
    "balance",
    "period_start",
    "period_end",
    "triggered_at",
)


def _insert_once(rows: list[PlatformFiring]) -> list[PlatformFiring]:
    """INSERT … ON CONFLICT DO NOTHING: only the firings this call recorded come back."""
    fields = [PlatformFiring._meta.get_field(name) for name in _COLUMNS]
    columns = ", ".join(str(field.column) for field in fields)  # type: ignore[union-attr]
    placeholders = ", ".join(["(" + ", ".join(["%s"] * len(fields)) + ")"] * len(rows))
    params = [
        field.get_db_prep_save(getattr(row, field.attname), connection)  # type: ignore[union-attr]
        for row in rows
        for field in fields
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {PlatformFiring._meta.db_table} ({columns})
            VALUES {placeholders}
            ON CONFLICT (platform_alert_id, organization_id, period_start) DO NOTHING
            RETURNING id, platform_alert_id
            """,
            params,
        )
        inserted = {alert_id: pk for pk, alert_id in cursor.fetchall()}
    recorded = []
    for row in rows:
        if row.platform_alert_id in inserted:
            row.pk = inserted[row.platform_alert_id]
            row._state.adding = False
            recorded.append(row)
    return recorded


def _notifications_write(organization: Organization, firings: list[PlatformFiring]) -> None:
    """One email per address and one platform webhook per URL of each firing's
    alert, unique per (firing, channel, recipient), queued on commit. Without
    PLATFORM_WEBHOOK_SECRET no webhook is written: none could be signed.
    """
    plan_key = organization.plan.key if organization.plan_id is not None else None  # type: ignore[union-attr]
    notifications = []
    for firing in firings:
        alert = firing.platform_alert
        event = platform_event(firing, alert, organization, plan_key)
        group_key = f"platform:{firing.pk}"
        notifications += [
            Notification(
                organization=organization,
                group_key=group_key,
                channel=Channel.EMAIL,
                recipient=address,
                event_type=PLATFORM_EMAIL,
                payload=event,
            )
            for address in dict.fromkeys(alert.emails)
        ]
        if settings.PLATFORM_WEBHOOK_SECRET:
            notifications += [
                Notification(
                    organization=organization,
                    group_key=group_key,
                    channel=Channel.PLATFORM_WEBHOOK,
                    recipient=url,
                    event_type=PLATFORM_EVENT,
                    payload=event,
                )
                for url in dict.fromkeys(alert.webhook_urls)
            ]
    for notification in Notification.objects.bulk_create(notifications):
        deliver_notification_on_commit(notification.pk)
