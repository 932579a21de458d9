"""Alert emails: one message per recipient, text and HTML from templates."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string

from config.credits import readable_credits

TEMPLATE = "emails/alert"


def _describe(firing: dict[str, Any], *, to_member: bool) -> str:
    kind = firing["kind"]
    if to_member and kind == "user_alert":
        return (
            f"You have used {readable_credits(firing['value'])} credits this billing period, "
            f"past the threshold of {readable_credits(firing['threshold_credits'])}"
        )
    if kind == "organization_alert":
        if firing["threshold_type"] == "percentage":
            return f"Organization usage reached {firing['threshold']}% of the credit allowance"
        return f"Organization usage reached {readable_credits(firing['threshold_credits'])} credits"
    who = firing["user_email"] or firing["user"]
    if kind == "user_alert":
        return f"{who} used {readable_credits(firing['threshold_credits'])} credits"
    return (
        f"{who} reached their credit limit of "
        f"{readable_credits(firing['threshold_credits'])} credits"
    )


def alert_email_context(payload: dict[str, Any]) -> dict[str, Any]:
    # Decided when the notification was written (alerts/services.py); older
    # payloads have no `recipient` and were all written for admins.
    to_member = payload.get("recipient", "admin") == "member"
    firings = [
        dict(firing, description=_describe(firing, to_member=to_member))
        for firing in payload["firings"]
    ]
    for firing in firings:
        firing["period_start_at"] = datetime.fromisoformat(firing["period_start"])
        firing["period_end_at"] = datetime.fromisoformat(firing["period_end"])
    if to_member:  # Limits & Alerts is admin-only: a member is sent to their own usage
        action_url, action_label = f"{settings.SITE_URL}/me/usage/", "See your usage"
    else:
        action_url, action_label = f"{settings.SITE_URL}/settings/limits/", "Review Limits & Alerts"
    return {
        "organization": payload["organization"],
        "to_member": to_member,
        "primary": firings[0],
        "others": firings[1:],
        "action_url": action_url,
        "action_label": action_label,
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
