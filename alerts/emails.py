"""Alert emails: one message per recipient, text and HTML from templates."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string

TEMPLATE = "emails/alert"


def _describe(firing: dict[str, Any]) -> str:
    kind = firing["kind"]
    if kind == "organization_alert":
        if firing["threshold_type"] == "percentage":
            return f"Organization usage reached {firing['threshold']}% of the credit allowance"
        return f"Organization usage reached {firing['threshold_credits']} credits"
    who = firing["user_email"] or firing["user"]
    if kind == "user_alert":
        return f"{who} used {firing['threshold_credits']} credits"
    return f"{who} reached their credit limit of {firing['threshold_credits']} credits"


def alert_email_context(payload: dict[str, Any]) -> dict[str, Any]:
    firings = [dict(firing, description=_describe(firing)) for firing in payload["firings"]]
    for firing in firings:
        firing["period_start_at"] = datetime.fromisoformat(firing["period_start"])
        firing["period_end_at"] = datetime.fromisoformat(firing["period_end"])
    return {
        "organization": payload["organization"],
        "primary": firings[0],
        "others": firings[1:],
        "settings_url": f"{settings.SITE_URL}/settings/limits/",
    }


def alert_email_build(
    *, recipient: str, payload: dict[str, Any], message_uid: str
) -> EmailMultiAlternatives:
    context = alert_email_context(payload)
    subject = " ".join(render_to_string(f"{TEMPLATE}.subject.txt", context).split())
    message = EmailMultiAlternatives(
        subject=subject,
        body=render_to_string(f"{TEMPLATE}.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[recipient],
        headers={"X-Headroom-Notification": message_uid},
    )
    message.attach_alternative(render_to_string(f"{TEMPLATE}.html", context), "text/html")
    return message
