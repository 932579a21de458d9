"""Events that are not an alert's firing (a grant created or expiring, the
top-up limit reached, an invoice, a limit request), written to the outbox
like every notification: in the caller's transaction, delivered by the
worker (alerts/outbox.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from django.utils import timezone

from accounts.models import Organization
from alerts.emails import CREDIT_EMAIL
from alerts.models import Channel, Notification, WebhookEndpoint
from alerts.outbox import admins_of, deliver_notification_on_commit, event_value
from alerts.payloads import iso


def credit_event_write(
    organization: Organization,
    event_type: str,
    data: dict[str, Any],
    *,
    email_admins: bool = False,
    email_to: Sequence[str] = (),
) -> None:
    """An event that is not an alert's firing (a grant created or expiring,
    the top-up limit reached, an invoice, a limit request): one webhook
    event per endpoint that takes it, and, with `email_admins`, one email
    per admin, or one to each address of `email_to`. In the caller's
    transaction, delivered like every notification.
    """
    group_key = uuid.uuid4().hex
    now = timezone.now()
    data = {"organization": organization.slug, **{k: event_value(v) for k, v in data.items()}}
    notifications = [
        Notification(
            organization=organization,
            group_key=group_key,
            channel=Channel.WEBHOOK,
            recipient=str(endpoint.pk),
            event_type=event_type,
            payload={"type": event_type, "timestamp": iso(now), "data": data},
        )
        for endpoint in WebhookEndpoint.objects.filter(
            organization=organization, disabled_at__isnull=True
        )
        if event_type in endpoint.events
    ]
    if email_admins or email_to:
        notifications += [
            Notification(
                organization=organization,
                group_key=group_key,
                channel=Channel.EMAIL,
                recipient=email,
                event_type=CREDIT_EMAIL,
                payload={
                    "organization": {"name": organization.name, "slug": organization.slug},
                    "event": event_type,
                    "data": data,
                },
            )
            for email in (
                [admin.user.email for admin in admins_of(organization)]
                if email_admins
                else list(dict.fromkeys(email_to))
            )
        ]
    for notification in Notification.objects.bulk_create(notifications):
        deliver_notification_on_commit(notification.pk)
