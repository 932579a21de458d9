"""What a message says about a firing: the summary stored with each email
notification, the Standard Webhooks payload, and which firing an email
leads with (alerts/outbox.py writes them).
"""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from accounts.models import Organization
from alerts.models import BALANCE_FIRING_KINDS, EVENT_TYPES, Firing, FiringKind
from billing.models import CREDITS_METER
from config.credits import format_credits


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


BALANCE_KINDS = frozenset(BALANCE_FIRING_KINDS.values())
# Which of a write's firings an email leads with: the most severe. Usage
# alerts by the highest threshold; balance alerts depleted, then the lowest
# threshold dropped below, then recovered.
_BALANCE_SEVERITY = {
    FiringKind.BALANCE_DEPLETED: 0,
    FiringKind.BALANCE_DROPPED: 1,
    FiringKind.BALANCE_RECOVERED: 2,
}


def severity(firing: Firing) -> tuple[int, Decimal]:
    if firing.currency:  # money alerts lead, by the highest amount: not comparable with credits
        return (-2, -firing.threshold_credits)
    if firing.kind in _BALANCE_SEVERITY:
        return (_BALANCE_SEVERITY[FiringKind(firing.kind)], firing.threshold_credits)
    return (-1, -firing.threshold_credits)


def firing_summary(firing: Firing) -> dict[str, Any]:
    """What a message says about one firing (stored with the notification)."""
    on_credits = firing.meter == CREDITS_METER
    percent_of_allowance = (
        format_credits(
            (firing.value * 100 / firing.allowance).quantize(Decimal("0.1"), ROUND_HALF_UP)
        )
        if firing.allowance and on_credits and not firing.currency
        else None
    )
    # An alert on a meter (SPEC §10) says the meter's name and unit.
    meter = None if on_credits or firing.alert is None else firing.alert.meter
    return {
        "meter": firing.meter,
        "meter_name": meter.name if meter else "Credits",
        "unit": meter.unit if meter else "credits",
        "firing_id": firing.pk,
        "kind": firing.kind,
        "alert_id": firing.alert_id or firing.balance_alert_id,
        "user": firing.user_external_id or None,
        "user_email": firing.membership.user.email if firing.membership else None,
        "threshold_type": firing.threshold_type or None,
        "threshold": format_credits(firing.threshold),
        "threshold_credits": format_credits(firing.threshold_credits),
        "value": format_credits(firing.value),
        "allowance": format_credits(firing.allowance) if firing.allowance is not None else None,
        "percent_of_allowance": percent_of_allowance,
        "currency": firing.currency or None,
        "period_start": firing.period_start.isoformat(),
        "period_end": firing.period_end.isoformat(),
        "triggered_at": firing.triggered_at.isoformat(),
        **_forecast_summary(firing),
    }


def _forecast_summary(firing: Firing) -> dict[str, Any]:
    """A forecast alert (SPEC §15): the projection, when the threshold is
    reached at this pace, and when the allowance runs out at it.
    """
    if firing.projected is None:
        return {}
    runs_out_at = None
    if firing.allowance and firing.value > 0:
        elapsed = firing.triggered_at - firing.period_start
        runs_out_at = firing.period_start + elapsed * float(firing.allowance / firing.value)
    return {
        "projected": format_credits(firing.projected),
        "projected_at": firing.projected_at.isoformat() if firing.projected_at else None,
        "runs_out_at": runs_out_at.isoformat() if runs_out_at else None,
    }


def webhook_payload(organization: Organization, firing: Firing) -> dict[str, Any]:
    """The Standard Webhooks payload of one firing."""
    if firing.kind in BALANCE_KINDS:
        return {
            "type": EVENT_TYPES[FiringKind(firing.kind)],
            "timestamp": iso(firing.triggered_at),
            "data": {
                "organization": organization.slug,
                "alert_id": firing.balance_alert_id,
                "threshold": format_credits(firing.threshold) if firing.threshold else None,
                "balance": format_credits(firing.value),
                "value": format_credits(firing.value),
            },
        }
    data: dict[str, Any] = {
        "organization": organization.slug,
        "alert_id": firing.alert_id,
        "user": firing.user_external_id or None,
        "meter": firing.meter,
        "threshold": format_credits(firing.threshold),
        "value": format_credits(firing.value),
        "period_start": firing.period_start.isoformat().replace("+00:00", "Z"),
        "period_end": firing.period_end.isoformat().replace("+00:00", "Z"),
    }
    if firing.currency:  # spend and invoice_total: amounts of money
        data.update(threshold_type=firing.threshold_type, currency=firing.currency)
    if firing.projected is not None:  # forecast (SPEC §15)
        data.update(
            threshold_type=firing.threshold_type,
            projected=format_credits(firing.projected),
            projected_at=iso(firing.projected_at) if firing.projected_at else None,
        )
    return {
        "type": EVENT_TYPES[FiringKind(firing.kind)],
        "timestamp": firing.triggered_at.isoformat().replace("+00:00", "Z"),
        "data": data,
    }
