"""Transports: one per channel, each sending one notification or raising
`TransportError(permanent=…)` (as healthchecks' transports do). Emails are
built from templates (emails/alert.*) and sent through Anymail; webhooks are
signed with Standard Webhooks and connect only to public addresses, checked
when the socket is opened (`PublicAddressesOnly`): a name that resolved to a
public address when its endpoint was registered and resolves to 127.0.0.1
now reaches nothing.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx
from anymail.exceptions import AnymailError, AnymailInvalidAddress, AnymailRecipientsRefused
from anymail.utils import get_anymail_setting
from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from alerts.emails import CREDIT_EMAIL, credit_email_build, email_from_templates
from alerts.models import Channel, Notification, WebhookEndpoint
from alerts.platform_messages import PLATFORM_EMAIL, PLATFORM_TEMPLATE, platform_email_context
from config.credits import readable_credits
from config.money import readable_money

logger = logging.getLogger(__name__)

# Each email carries its notification's uid in this metadata field (Postmark
# allows keys of up to 20 characters), by which the provider can find it.
EMAIL_METADATA_KEY = "notification_uid"


LOOKUP_TIMEOUT_SECONDS = 10


class TransportError(Exception):
    def __init__(self, message: str, *, permanent: bool = False, status: int | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.status = status


@dataclass(frozen=True)
class Sent:
    provider_message_id: str = ""
    status: int | None = None


def platform_email_build(
    *, recipient: str, payload: dict[str, Any], message_uid: str
) -> EmailMultiAlternatives:
    return email_from_templates(
        PLATFORM_TEMPLATE,
        platform_email_context(payload),
        recipient=recipient,
        message_uid=message_uid,
    )


def _send_email(notification: Notification) -> Sent:
    build = {CREDIT_EMAIL: credit_email_build, PLATFORM_EMAIL: platform_email_build}.get(
        notification.event_type, alert_email_build
    )
    message = build(
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
    response = _post_signed(notification, url=endpoint.url, secret=endpoint.secret)
    if response.status_code == 410:
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
            disabled_at=timezone.now(), disabled_reason="The receiver answered 410 Gone."
        )
        raise TransportError("410 Gone: the endpoint is disabled.", permanent=True, status=410)
    return _accepted(response)


def _send_platform_webhook(notification: Notification) -> Sent:
    """A platform alert's event to one of its URLs (the recipient), signed
    with the platform's secret. Written only while a secret is set; one
    unset since fails for good rather than send unsigned.
    """
    secret = settings.PLATFORM_WEBHOOK_SECRET
    if not secret:
        raise TransportError("PLATFORM_WEBHOOK_SECRET is not set.", permanent=True)
    response = _post_signed(notification, url=notification.recipient, secret=secret)
    if response.status_code == 410:
        raise TransportError("410 Gone.", permanent=True, status=410)
    return _accepted(response)


def _post_signed(notification: Notification, *, url: str, secret: str) -> httpx.Response:
    """POST the notification's payload to `url`, signed per Standard Webhooks."""
    body = json.dumps(notification.payload, separators=(",", ":"))
    now = timezone.now()
    message_id = webhook_message_id(notification)
    signature = Webhook(secret).sign(message_id, now, body)
    headers = {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
        "user-agent": "Headroom-Webhooks/1",
    }
    try:
        with _webhook_client() as client:
            return client.post(url, content=body, headers=headers)
    except httpx.HTTPError as error:
        raise TransportError(f"{type(error).__name__}: {error}") from error


def _accepted(response: httpx.Response) -> Sent:
    if not 200 <= response.status_code < 300:
        raise TransportError(f"HTTP {response.status_code}", status=response.status_code)
    return Sent(status=response.status_code)


TRANSPORTS: dict[str, Callable[[Notification], Sent]] = {
    Channel.EMAIL: _send_email,
    Channel.WEBHOOK: _send_webhook,
    Channel.PLATFORM_WEBHOOK: _send_platform_webhook,
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


def taken_by_provider(notification: Notification) -> Sent | None:
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


TEMPLATE = "emails/alert"


BALANCE_DESCRIPTIONS = {
    "balance_depleted": "The credit balance is used up",
    "balance_recovered": "Credits are available again",
}


def _describe(firing: dict[str, Any], *, to_member: bool) -> str:
    kind = firing["kind"]
    if kind == "balance_dropped":
        return (
            f"The credit balance dropped below {readable_credits(firing['threshold_credits'])} "
            "credits"
        )
    if kind in BALANCE_DESCRIPTIONS:
        return BALANCE_DESCRIPTIONS[kind]
    if to_member and kind == "user_alert":
        return (
            f"You have used {readable_credits(firing['value'])} credits this billing period, "
            f"past the threshold of {readable_credits(firing['threshold_credits'])}"
        )
    if kind == "organization_alert" and firing.get("currency"):
        what = "Spend" if firing["threshold_type"] == "spend" else "Invoice total"
        threshold = readable_money(Decimal(firing["threshold"]), firing["currency"])
        return f"{what} this period reached {threshold}"
    if kind == "organization_alert":
        if firing.get("meter", "credits") != "credits":
            return (
                f"{firing['meter_name']} reached {readable_credits(firing['threshold_credits'])} "
                f"{firing['unit']} this billing period"
            )
        if firing["threshold_type"] == "forecast":
            return (
                f"Organization usage is on pace to pass {firing['threshold']}% of the credit "
                "allowance this billing period"
            )
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
    # Decided when the notification was written (alerts/outbox.py); older
    # payloads have no `recipient` and were all written for admins.
    to_member = payload.get("recipient", "admin") == "member"
    firings = [
        dict(
            {"unit": "credits"},  # payloads written before meters (SPEC §10) have none
            **firing,
            description=_describe(firing, to_member=to_member),
            is_balance=firing["kind"].startswith("balance_"),
        )
        for firing in payload["firings"]
    ]
    for firing in firings:
        if firing.get("currency"):
            firing["threshold_money"] = readable_money(
                Decimal(firing["threshold"]), firing["currency"]
            )
            firing["value_money"] = readable_money(Decimal(firing["value"]), firing["currency"])
        firing["period_start_at"] = datetime.fromisoformat(firing["period_start"])
        firing["period_end_at"] = datetime.fromisoformat(firing["period_end"])
        for moment in ("projected_at", "runs_out_at"):  # a forecast alert's (SPEC §15)
            if firing.get(moment):
                firing[f"{moment}_date"] = datetime.fromisoformat(firing[moment])
    if to_member:  # Limits & Alerts is admin-only: a member is sent to their own usage
        action_url, action_label = f"{settings.SITE_URL}/me/usage/", "See your usage"
    elif firings[0]["is_balance"]:
        action_url, action_label = f"{settings.SITE_URL}/credits/", "Manage credits"
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
    return email_from_templates(
        TEMPLATE, alert_email_context(payload), recipient=recipient, message_uid=message_uid
    )
