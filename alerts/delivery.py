"""Delivering the outbox: claim a notification, send it, record the attempt.

A worker claims a row with a conditional UPDATE (pending and due, or a
`sending` claim whose lease ran out), so two workers or a task run twice
never send the same notification at once; a sent one is never claimed again.
One transport per channel raises `TransportError(permanent=…)`.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import httpx
from anymail.exceptions import AnymailError, AnymailInvalidAddress, AnymailRecipientsRefused
from anymail.utils import get_anymail_setting
from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from alerts.emails import alert_email_build
from alerts.models import Channel, DeliveryAttempt, DeliveryStatus, Notification, WebhookEndpoint

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 15
# Each email carries its notification's uid in this metadata field (Postmark
# allows keys of up to 20 characters), by which the provider can find it.
EMAIL_METADATA_KEY = "notification_uid"
LOOKUP_TIMEOUT_SECONDS = 10
CUT_SHORT = "Cut short: the worker stopped before the outcome was recorded."


class TransportError(Exception):
    def __init__(self, message: str, *, permanent: bool = False, status: int | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.status = status


@dataclass(frozen=True)
class Sent:
    provider_message_id: str = ""
    status: int | None = None


def retry_delay(attempts: int) -> float:
    """Exponential backoff with jitter, capped below Redis's visibility timeout."""
    base = float(settings.NOTIFICATION_RETRY_BASE_SECONDS)
    ceiling = float(settings.CELERY_MAX_RETRY_COUNTDOWN)
    delay = min(ceiling, base * 2 ** max(0, attempts - 1))
    return delay * random.uniform(0.5, 1.0)


def _send_email(notification: Notification) -> Sent:
    message = alert_email_build(
        recipient=notification.recipient,
        payload=notification.payload,
        message_uid=str(notification.uid),
    )
    # What finds the email at the provider again (see `_taken_by_provider`).
    message.metadata = {EMAIL_METADATA_KEY: str(notification.uid)}  # type: ignore[attr-defined]
    try:
        message.send(fail_silently=False)
    except (AnymailRecipientsRefused, AnymailInvalidAddress) as error:
        raise TransportError(str(error), permanent=True) from error
    except AnymailError as error:
        raise TransportError(str(error), status=getattr(error, "status_code", None)) from error
    except OSError as error:
        raise TransportError(f"{type(error).__name__}: {error}") from error
    status = getattr(message, "anymail_status", None)
    return Sent(provider_message_id=(status.message_id or "") if status else "")


def url_is_public(url: str) -> bool:
    """Whether every address the URL's host resolves to is public."""
    host = urlsplit(url).hostname
    if not host:
        return False
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            return False
    return True


def webhook_message_id(notification: Notification) -> str:
    """The `webhook-id`: the same on every retry of one notification."""
    return f"msg_{notification.uid.hex}"


def _send_webhook(notification: Notification) -> Sent:
    endpoint = WebhookEndpoint.objects.filter(pk=int(notification.recipient)).first()
    if endpoint is None or endpoint.disabled_at is not None:
        raise TransportError("The webhook endpoint is deleted or disabled.", permanent=True)
    if not settings.WEBHOOKS_ALLOW_PRIVATE_URLS and not url_is_public(endpoint.url):
        raise TransportError(
            "The endpoint resolves to a private or loopback address.", permanent=True
        )
    body = json.dumps(notification.payload, separators=(",", ":"))
    now = timezone.now()
    message_id = webhook_message_id(notification)
    signature = Webhook(endpoint.secret).sign(message_id, now, body)
    headers = {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
        "user-agent": "Headroom-Webhooks/1",
    }
    try:
        response = httpx.post(
            endpoint.url,
            content=body,
            headers=headers,
            timeout=float(getattr(settings, "WEBHOOK_TIMEOUT_SECONDS", 10)),
            follow_redirects=False,
        )
    except httpx.HTTPError as error:
        raise TransportError(f"{type(error).__name__}: {error}") from error
    if response.status_code == 410:
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
            disabled_at=now, disabled_reason="The receiver answered 410 Gone."
        )
        raise TransportError("410 Gone: the endpoint is disabled.", permanent=True, status=410)
    if not 200 <= response.status_code < 300:
        raise TransportError(f"HTTP {response.status_code}", status=response.status_code)
    return Sent(status=response.status_code)


TRANSPORTS: dict[str, Callable[[Notification], Sent]] = {
    Channel.EMAIL: _send_email,
    Channel.WEBHOOK: _send_webhook,
}


def _postmark_message_id(notification: Notification) -> str | None:
    """The MessageID Postmark gave this notification's email, if it took it
    (its outbound message search, by metadata).
    """
    api_url = get_anymail_setting(
        "api_url", esp_name="Postmark", default="https://api.postmarkapp.com/"
    )
    token = get_anymail_setting("server_token", esp_name="Postmark", allow_bare=True)
    try:
        response = httpx.get(
            f"{api_url.rstrip('/')}/messages/outbound",
            params={
                "count": 1,
                "offset": 0,
                f"metadata_{EMAIL_METADATA_KEY}": str(notification.uid),
            },
            headers={"Accept": "application/json", "X-Postmark-Server-Token": token},
            timeout=LOOKUP_TIMEOUT_SECONDS,
        )
    except httpx.HTTPError as error:
        raise TransportError(f"Message search: {type(error).__name__}: {error}") from error
    if response.status_code != 200:
        raise TransportError(
            f"Message search: HTTP {response.status_code}", status=response.status_code
        )
    messages = response.json().get("Messages") or []
    return str(messages[0].get("MessageID") or "") if messages else None


# Email backends that can tell whether they already took a message.
EMAIL_LOOKUPS: dict[str, Callable[[Notification], str | None]] = {
    "anymail.backends.postmark.EmailBackend": _postmark_message_id,
}


def _taken_by_provider(notification: Notification) -> Sent | None:
    """After an attempt that was cut short (its worker died, or the database
    went away before the outcome was written), whether the provider took the
    email anyway: sending it again blindly would send it twice. Webhooks are
    sent again: the same `webhook-id` lets receivers drop the duplicate.
    """
    if notification.channel != Channel.EMAIL:
        return None
    lookup = EMAIL_LOOKUPS.get(settings.EMAIL_BACKEND)
    if lookup is None:
        logger.warning(
            "Notification %s: an attempt was cut short and %s cannot say whether it was "
            "sent; sending it again",
            notification.pk,
            settings.EMAIL_BACKEND,
        )
        return None
    message_id = lookup(notification)
    return None if message_id is None else Sent(provider_message_id=message_id)


def _cut_short_before(notification: Notification, now: datetime) -> bool:
    """Whether an earlier attempt was cut short: its worker died, or the
    database went away, before its outcome was written. Closes such attempts.
    """
    if notification.attempts <= 1:
        return False
    earlier = DeliveryAttempt.objects.filter(notification=notification)
    earlier.filter(finished_at__isnull=True).update(finished_at=now, error=CUT_SHORT)
    return earlier.filter(error=CUT_SHORT).exists()


def notification_claim(*, notification_id: int, now: datetime) -> Notification | None:
    due = Q(status=DeliveryStatus.PENDING, next_attempt_at__lte=now) | Q(
        status=DeliveryStatus.SENDING, claimed_until__lt=now
    )
    claimed = Notification.objects.filter(due, pk=notification_id).update(
        status=DeliveryStatus.SENDING,
        claimed_until=now + timedelta(seconds=settings.NOTIFICATION_CLAIM_LEASE_SECONDS),
        attempts=F("attempts") + 1,
    )
    if not claimed:
        return None
    return Notification.objects.get(pk=notification_id)


def notification_deliver(*, notification_id: int) -> None:
    """Send one notification if it is due; safe to run any number of times."""
    now = timezone.now()
    notification = notification_claim(notification_id=notification_id, now=now)
    if notification is None:
        return
    cut_short = _cut_short_before(notification, now)
    attempt = DeliveryAttempt.objects.create(notification=notification, started_at=now)
    try:
        sent = _taken_by_provider(notification) if cut_short else None
        if sent is None:
            sent = TRANSPORTS[notification.channel](notification)
    except TransportError as error:
        _record_failure(notification, attempt, error)
        return
    finished = timezone.now()
    DeliveryAttempt.objects.filter(pk=attempt.pk).update(
        finished_at=finished,
        succeeded=True,
        provider_message_id=sent.provider_message_id,
        response_status=sent.status,
    )
    Notification.objects.filter(pk=notification.pk, status=DeliveryStatus.SENDING).update(
        status=DeliveryStatus.SENT,
        sent_at=finished,
        claimed_until=None,
        provider_message_id=sent.provider_message_id,
        last_error="",
    )


def _record_failure(
    notification: Notification, attempt: DeliveryAttempt, error: TransportError
) -> None:
    now = timezone.now()
    DeliveryAttempt.objects.filter(pk=attempt.pk).update(
        finished_at=now, error=str(error)[:2000], response_status=error.status
    )
    if error.permanent or notification.attempts >= MAX_ATTEMPTS:
        Notification.objects.filter(pk=notification.pk).update(
            status=DeliveryStatus.FAILED, claimed_until=None, last_error=str(error)[:2000]
        )
        logger.warning("Notification %s failed for good: %s", notification.pk, error)
        return
    delay = retry_delay(notification.attempts)
    Notification.objects.filter(pk=notification.pk).update(
        status=DeliveryStatus.PENDING,
        claimed_until=None,
        next_attempt_at=now + timedelta(seconds=delay),
        last_error=str(error)[:2000],
    )
    from alerts.tasks import deliver_notification

    if not settings.CELERY_TASK_ALWAYS_EAGER:  # in-process mode: the sweep retries
        try:
            deliver_notification.apply_async((notification.pk,), countdown=delay)
        except Exception:  # the broker is down: the sweep will re-queue it
            logger.warning(
                "Could not queue the retry of notification %s", notification.pk, exc_info=True
            )


def notifications_requeue_stale(*, now: datetime | None = None) -> int:
    """Re-queue what should have been delivered by now: due rows whose task was
    lost (a crash between commit and publish, Redis down) and expired claims.
    """
    from alerts.tasks import deliver_notification

    now = now or timezone.now()
    stale_after = timedelta(seconds=settings.NOTIFICATION_STALE_AFTER_SECONDS)
    stale = Notification.objects.filter(
        Q(status=DeliveryStatus.PENDING, next_attempt_at__lte=now - stale_after)
        | Q(status=DeliveryStatus.SENDING, claimed_until__lt=now)
    ).values_list("pk", flat=True)[:1000]
    count = 0
    for pk in stale:
        deliver_notification.delay(pk)
        count += 1
    return count
