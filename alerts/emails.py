"""What an email says and how it is built from its templates: the credit
notices (a grant, an invoice, a limit request: emails/credit_notice.*) and
the helper every email of alerts/transports.py uses.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string

from config.credits import readable_credits
from config.money import readable_money

CREDIT_EMAIL = "credit_email"
CREDIT_TEMPLATE = "emails/credit_notice"


def credit_email_context(payload: dict[str, Any]) -> dict[str, Any]:
    """What a credit notice says: a grant made by auto top-up, credits about
    to expire, the top-up limit reached (alerts/outbox.py, credit_event_write).
    """
    data = dict(payload["data"])
    for name in ("expires_at", "effective_at", "period_start", "covered_from", "covered_through"):
        if data.get(name):
            data[f"{name}_at"] = datetime.fromisoformat(data[name].replace("Z", "+00:00"))
    event = payload["event"]
    action_url, action_label = f"{settings.SITE_URL}/credits/", "Manage credits"
    if event == "invoice.created":
        data["amount_text"] = readable_money(Decimal(data["amount"]), data["currency"])
        headline = f"Invoice for {data['amount_text']} issued"
        action_url = f"{settings.SITE_URL}/settings/limits/"
        action_label = "Review Limits & Alerts"
    elif event.startswith("limit_request."):
        headline, action_url, action_label = _limit_request_notice(event, data)
    elif event == "credit_grant.created":
        headline = f"Auto top-up added {readable_credits(data['credits'])} credits"
    elif event == "credit_grant.expiring":
        expires = data["expires_at_at"]
        headline = (
            f"{readable_credits(data['remaining'])} credits expire on {expires:%b} {expires.day}"
        )
    else:
        headline = "Auto top-up reached its limit for this billing period"
    return {
        "organization": payload["organization"],
        "event": event,
        "data": data,
        "headline": headline,
        "action_url": action_url,
        "action_label": action_label,
    }


def _limit_request_notice(event: str, data: dict[str, Any]) -> tuple[str, str, str]:
    """A limit request's email (SPEC §14): to the admins, or to the member."""
    if event == "limit_request.created":
        return (
            f"{data['user']} asks for {readable_credits(data['credits'])} more credits",
            f"{settings.SITE_URL}/settings/limits/#limit-requests",
            "Review the request",
        )
    if event == "limit_request.approved":
        when = " for this billing period" if data.get("this_period_only") else ""
        headline = (
            f"Your request was approved: {readable_credits(data['approved_credits'])} more "
            f"credits{when}"
        )
    else:
        headline = "Your request for more credits was declined"
    return headline, f"{settings.SITE_URL}/me/usage/", "See your usage"


def credit_email_build(
    *, recipient: str, payload: dict[str, Any], message_uid: str
) -> EmailMultiAlternatives:
    return email_from_templates(
        CREDIT_TEMPLATE, credit_email_context(payload), recipient=recipient, message_uid=message_uid
    )


def email_from_templates(
    template: str, context: dict[str, Any], *, recipient: str, message_uid: str
) -> EmailMultiAlternatives:
    """An email from `template`'s subject, text and HTML parts."""
    subject = " ".join(render_to_string(f"{template}.subject.txt", context).split())
    message = EmailMultiAlternatives(
        subject=subject,
        body=render_to_string(f"{template}.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[recipient],
        headers={"X-Headroom-Notification": message_uid},
    )
    message.attach_alternative(render_to_string(f"{template}.html", context), "text/html")
    return message
