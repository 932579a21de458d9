"""Recording what fired: a firing once per unique key (INSERT … ON CONFLICT
DO NOTHING), and its notifications in the same transaction. The rules
(alerts/services/rules.py, alerts/services/credits.py) decide the
candidates; this module records them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import Field
from django.utils import timezone

from accounts.models import Membership, Organization
from alerts.models import BalanceAlert, Firing, OrganizationAlert
from alerts.outbox import notifications_write
from billing.models import CREDITS_METER
from billing.periods import Period


@dataclass
class Candidate:
    """A firing to record unless it already was: what the rules found."""

    kind: str
    dedupe_key: str
    threshold: Decimal
    threshold_credits: Decimal
    value: Decimal
    alert: OrganizationAlert | None = None
    membership_id: int | None = None
    balance_alert: BalanceAlert | None = None
    meter: str = CREDITS_METER
    currency: str = ""
    projected: Decimal | None = None
    projected_at: datetime | None = None


def fire(organization: Organization, period: Period, candidates: list[Candidate]) -> list[Firing]:
    """Record the candidates that have not fired yet, and their notifications."""
    if not candidates:
        return []
    now = timezone.now()
    members = {
        membership.pk: membership
        for membership in Membership.objects.filter(
            pk__in={c.membership_id for c in candidates if c.membership_id is not None}
        ).select_related("user")
    }
    firings = _insert_firings(organization, period, candidates, members, now)
    if firings:
        notifications_write(organization, period, firings, members)
    forecasts = [c.alert.pk for c in candidates if c.alert and c.projected is not None]
    if forecasts:  # fired once: quiet for the period, so later writes skip it
        OrganizationAlert.objects.filter(pk__in=forecasts).update(quiet_period_start=period.start)
    return firings


def _insert_firings(
    organization: Organization,
    period: Period,
    candidates: list[Candidate],
    members: dict[int, Membership],
    now: datetime,
) -> list[Firing]:
    """INSERT … ON CONFLICT DO NOTHING: only the firings this call recorded come back."""
    rows = []
    for candidate in candidates:
        membership = members.get(candidate.membership_id) if candidate.membership_id else None
        rows.append(
            Firing(
                organization=organization,
                kind=candidate.kind,
                alert=candidate.alert,
                balance_alert=candidate.balance_alert,
                membership=membership,
                user_external_id=membership.external_id if membership else "",
                meter=candidate.meter,
                currency=candidate.currency,
                threshold_type=candidate.alert.threshold_type if candidate.alert else "",
                threshold=candidate.threshold,
                threshold_credits=candidate.threshold_credits,
                value=candidate.value,
                allowance=period.allowance(organization.credit_allowance),
                period_start=period.start,
                period_end=period.end,
                triggered_at=now,
                dedupe_key=candidate.dedupe_key,
                projected=candidate.projected,
                projected_at=candidate.projected_at,
            )
        )
    fields: list[Field[Any, Any]] = [
        Firing._meta.get_field(name)  # type: ignore[misc]
        for name in (
            "organization",
            "kind",
            "alert",
            "balance_alert",
            "membership",
            "user_external_id",
            "meter",
            "currency",
            "threshold_type",
            "threshold",
            "threshold_credits",
            "value",
            "allowance",
            "period_start",
            "period_end",
            "triggered_at",
            "dedupe_key",
            "projected",
            "projected_at",
        )
    ]
    columns = ", ".join(str(field.column) for field in fields)
    placeholders = ", ".join(["(" + ", ".join(["%s"] * len(fields)) + ")"] * len(rows))
    params = [
        field.get_db_prep_save(getattr(row, field.attname), connection)
        for row in rows
        for field in fields
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {Firing._meta.db_table} ({columns})
            VALUES {placeholders}
            ON CONFLICT (organization_id, dedupe_key) DO NOTHING
            RETURNING id, dedupe_key
            """,
            params,
        )
        inserted = dict((key, pk) for pk, key in cursor.fetchall())
    recorded = []
    for row in rows:
        if row.dedupe_key in inserted:
            row.pk = inserted[row.dedupe_key]
            row._state.adding = False
            recorded.append(row)
    return recorded
