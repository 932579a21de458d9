"""What a platform alert's firing says (SPEC §12): the Standard Webhooks
event `platform_alert.triggered` posted to the alert's URLs, and the email
to its addresses, built from the same event (templates/emails/platform_alert.*).
"""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.conf import settings

from accounts.models import Organization
from alerts.payloads import iso
from alerts.platform_models import PlatformAlert, PlatformFiring, PlatformThresholdType
from config.credits import format_credits

PLATFORM_EVENT = "platform_alert.triggered"
PLATFORM_EMAIL = "platform_alert_email"
PLATFORM_TEMPLATE = "emails/platform_alert"


def _credits(value: Decimal | None) -> str | None:
    return None if value is None else format_credits(value)


def platform_event(
    firing: PlatformFiring, alert: PlatformAlert, organization: Organization, plan_key: str | None
) -> dict[str, Any]:
    """The event of one firing, as posted (and as the email reads it)."""
    depleted = firing.threshold_type == PlatformThresholdType.BALANCE_DEPLETED
    usage: dict[str, Any] = {"used": format_credits(firing.value), "allowance": None}
    usage["allowance"] = _credits(firing.allowance)
    if depleted:
        usage["balance"] = _credits(firing.balance)
    return {
        "type": PLATFORM_EVENT,
        "timestamp": iso(firing.triggered_at),
        "data": {
            "organization": {
                "slug": organization.slug,
                "name": organization.name,
                "plan": plan_key,
            },
            "usage": usage,
            "alert": {
                "id": alert.pk,
                "name": alert.name,
                "threshold_type": firing.threshold_type,
                "threshold": _credits(firing.threshold),
            },
            "period": {"start": iso(firing.period_start), "end": iso(firing.period_end)},
            "triggered_at": iso(firing.triggered_at),
        },
    }


def _moment(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def platform_email_context(payload: dict[str, Any]) -> dict[str, Any]:
    """The email's words, from the event stored as its payload."""
    data = payload["data"]
    alert, usage = data["alert"], data["usage"]
    threshold_type = alert["threshold_type"]
    if threshold_type == PlatformThresholdType.BALANCE_DEPLETED:
        crossed = "used up its credit balance"
    elif threshold_type == PlatformThresholdType.PERCENTAGE:
        crossed = f"reached {alert['threshold']}% of its credit allowance"
    else:
        crossed = f"reached {alert['threshold']} credits"
    percent = None
    if usage.get("allowance"):
        share = Decimal(usage["used"]) * 100 / Decimal(usage["allowance"])
        percent = format_credits(share.quantize(Decimal("0.1"), ROUND_HALF_UP))
    return {
        "organization": data["organization"],
        "alert": alert,
        "usage": usage,
        "percent_of_allowance": percent,
        "headline": f"{data['organization']['name']} {crossed}",
        "period_start_at": _moment(data["period"]["start"]),
        "period_end_at": _moment(data["period"]["end"]),
        "triggered_at": _moment(data["triggered_at"]),
        "admin_url": f"{settings.SITE_URL}/admin/alerts/platformfiring/?platform_alert__id__exact="
        f"{alert['id']}",
    }
