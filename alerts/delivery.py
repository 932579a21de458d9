"""Delivering the outbox: claim a notification, send it, record the attempt.

A worker claims a row with a conditional UPDATE (pending and due, or a
`sending` claim whose lease ran out), so two workers or a task run twice
never send the same notification at once; a sent one is never claimed again.
One transport per channel raises `TransportError(permanent=…)`; any other
error while delivering counts as a failed attempt too, and no row is claimed
more than MAX_ATTEMPTS times, so that nothing loops.

Webhooks connect only to public addresses, checked when the socket is
opened (`PublicAddressesOnly`): a name that resolved to a public address
when its endpoint was registered and resolves to 127.0.0.1 now reaches
nothing.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import random
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import httpcore
import httpx
from anymail.exceptions import AnymailError, AnymailInvalidAddress, AnymailRecipientsRefused
from anymail.utils import get_anymail_setting
from django.conf import settings
from django.db import transaction
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


# IPv6 addresses that carry an IPv4 address a gateway connects to.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def address_is_public(address: str) -> bool:
    """Whether webhooks may connect to this IP address: not loopback, private,
    link-local, shared (CGNAT), reserved, unspecified or multicast. An IPv6
    address that carries an IPv4 one (IPv4-mapped, 6to4, Teredo, NAT64) is
    judged by the IPv4 address it leads to.
    """
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip.sixtofour is not None:
            ip = ip.sixtofour
        elif ip.teredo is not None:
            ip = ip.teredo[1]
        elif ip in _NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    # `is_global` alone lets multicast through (224.0.0.0/4 and ff00::/8 are "global").
    return ip.is_global and not ip.is_multicast and not ip.is_reserved


def url_is_public(url: str) -> bool:
    """Whether every address the URL's host resolves to now is public (when an
    endpoint is registered; deliveries check again when they connect).
    """
    host = urlsplit(url).hostname
    if not host:
        return False
    try:
        infos = socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        return False
    return all(address_is_public(str(info[4][0])) for info in infos)


class PublicAddressesOnly(httpcore.SyncBackend):
    """httpcore's network backend, refusing any address that is not public at
    the moment the socket is opened, as healthchecks does: the name is
    resolved here, every address is checked, and the socket connects to a
    checked address, never to the name, so no later resolution can move it
    elsewhere (DNS rebinding). TLS is unchanged: httpcore still wraps the
    socket with the URL's host name for SNI and certificate verification.
    """

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as error:
            raise httpcore.ConnectError(f"{host}: {error}") from error
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        refused = [address for address in addresses if not address_is_public(address)]
        if refused or not addresses:
            raise _not_public(host, refused)
        last_error: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in addresses:
            try:
                stream = super().connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                last_error = error
                continue
            # The peer the socket is connected to: what was checked, by construction.
            peer = str(stream.get_extra_info("server_addr")[0])
            if not address_is_public(peer):
                stream.close()
                raise _not_public(host, [peer])
            return stream
        assert last_error is not None
        raise last_error


def _not_public(host: str, addresses: Sequence[str]) -> TransportError:
    # Not an httpcore error: httpx lets it through as it is, to the delivery.
    return TransportError(
        f"Refused to connect to {host} at {', '.join(addresses) or 'no address'}: a "
        "loopback, private, link-local or otherwise non-public address.",
        permanent=True,
    )


def _webhook_client() -> httpx.Client:
    """A client for one delivery. Unless private URLs are allowed, its
    connections go through `PublicAddressesOnly`. No proxy from the
    environment is used: the address checked must be the receiver's.
    """
    timeout = float(getattr(settings, "WEBHOOK_TIMEOUT_SECONDS", 10))
    tls = httpx.create_ssl_context()  # httpx's own: certificates and host names verified
    transport = httpx.HTTPTransport(verify=tls)
    if not settings.WEBHOOKS_ALLOW_PRIVATE_URLS:
        # httpx takes no network backend of its own: give its transport a pool that has one.
        transport._pool = httpcore.ConnectionPool(
            ssl_context=tls, network_backend=PublicAddressesOnly()
        )
    return httpx.Client(
        transport=transport, timeout=timeout, follow_redirects=False, trust_env=False
    )


def webhook_message_id(notification: Notification) -> str:
    """The `webhook-id`: the same on every retry of one notification."""
    return f"msg_{notification.uid.hex}"


def _send_webhook(notification: Notification) -> Sent:
    endpoint = WebhookEndpoint.objects.filter(pk=int(notification.recipient)).first()
    if endpoint is None or endpoint.disabled_at is not None:
        raise TransportError("The webhook endpoint is deleted or disabled.", permanent=True)
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
        with _webhook_client() as client:
            response = client.post(endpoint.url, content=body, headers=headers)
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
    """Take the row for one attempt, if it is due and has attempts left.

    The cap is part of the claim, not only of the failure path: a row whose
    attempts keep dying with their worker (killed, out of memory) never gets
    to record a failure, and would otherwise be taken again at every lease.
    """
    due = Q(status=DeliveryStatus.PENDING, next_attempt_at__lte=now) | Q(
        status=DeliveryStatus.SENDING, claimed_until__lt=now
    )
    claimed = Notification.objects.filter(
        due, pk=notification_id, attempts__lt=MAX_ATTEMPTS
    ).update(
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
    except Exception as error:
        # A template that does not render, a payload missing a key, a bug: a
        # failed attempt like any other, retried with backoff until the last
        # one marks it failed, never left `sending` for the sweep to re-claim.
        logger.exception("Notification %s: delivery raised", notification.pk)
        _record_failure(notification, attempt, TransportError(f"{type(error).__name__}: {error}"))
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
        logger.error(
            "Notification %s failed for good after %s attempt(s): %s",
            notification.pk,
            notification.attempts,
            error,
        )
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


EXHAUSTED = "No attempts left: the last one's worker stopped before its outcome was recorded."


def _fail_exhausted_claims(now: datetime) -> None:
    """Mark failed the rows whose last attempt's worker died: they are never
    claimed again (the claim's cap), so without this they would stay
    `sending` for ever, neither retried nor shown as failed.
    """
    exhausted = list(
        Notification.objects.filter(
            status=DeliveryStatus.SENDING, claimed_until__lt=now, attempts__gte=MAX_ATTEMPTS
        ).values_list("pk", flat=True)[:1000]
    )
    if not exhausted:
        return
    with transaction.atomic():
        failed = list(
            Notification.objects.filter(
                pk__in=exhausted, status=DeliveryStatus.SENDING, claimed_until__lt=now
            )
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)
        )
        DeliveryAttempt.objects.filter(notification_id__in=failed, finished_at__isnull=True).update(
            finished_at=now, error=CUT_SHORT
        )
        Notification.objects.filter(pk__in=failed).update(
            status=DeliveryStatus.FAILED, claimed_until=None, last_error=EXHAUSTED
        )
    for pk in failed:
        logger.error("Notification %s failed for good: %s", pk, EXHAUSTED)


def notifications_requeue_stale(*, now: datetime | None = None) -> int:
    """Re-queue what should have been delivered by now: due rows whose task was
    lost (a crash between commit and publish, Redis down) and expired claims
    with attempts left; an expired claim with none left is marked failed.
    """
    from alerts.tasks import deliver_notification

    now = now or timezone.now()
    _fail_exhausted_claims(now)
    stale_after = timedelta(seconds=settings.NOTIFICATION_STALE_AFTER_SECONDS)
    stale = Notification.objects.filter(
        Q(status=DeliveryStatus.PENDING, next_attempt_at__lte=now - stale_after)
        | Q(status=DeliveryStatus.SENDING, claimed_until__lt=now),
        attempts__lt=MAX_ATTEMPTS,
    ).values_list("pk", flat=True)[:1000]
    count = 0
    for pk in stale:
        deliver_notification.delay(pk)
        count += 1
    return count


@dataclass(frozen=True)
class Resent:
    queued: int
    skipped: int


def notifications_resend(*, notification_ids: Sequence[int]) -> Resent:
    """Send these notifications again, failed or sent ones included (a staff
    decision), each with every attempt allowed again. One being sent right
    now is left to its worker, so that it cannot go out twice at once.
    """
    from alerts.tasks import deliver_notification_on_commit

    with transaction.atomic():
        chosen = list(
            Notification.objects.filter(pk__in=notification_ids)
            .select_for_update()
            .values_list("pk", "status")
        )
        resend = [pk for pk, status in chosen if status != DeliveryStatus.SENDING]
        Notification.objects.filter(pk__in=resend).update(
            status=DeliveryStatus.PENDING,
            attempts=0,
            next_attempt_at=timezone.now(),
            claimed_until=None,
            sent_at=None,
        )
        for pk in resend:
            deliver_notification_on_commit(pk)
    return Resent(queued=len(resend), skipped=len(chosen) - len(resend))
