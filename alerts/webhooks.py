"""Webhook endpoints of an organization: where signed alert events are sent.

The secret is a Standard Webhooks secret (`whsec_` + base64 of 24 random
bytes). It is shown to the caller once, when the endpoint is made; the
delivery worker signs every message with it.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import secrets
from collections.abc import Sequence
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction

from accounts.models import Organization
from accounts.services import organization_cap_check
from alerts.models import CREDIT_EVENT_TYPES, EVENT_TYPES, WebhookEndpoint
from alerts.transports import url_is_public
from config.errors import InvalidInput

WEBHOOK_EVENT_TYPES: tuple[str, ...] = (*EVENT_TYPES.values(), *CREDIT_EVENT_TYPES)
MAX_URL_LENGTH = WebhookEndpoint._meta.get_field("url").max_length or 2000
# Every firing writes one notification per subscribed endpoint: bound the fan-out.
MAX_WEBHOOK_ENDPOINTS = 20
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24

_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


def webhook_secret_generate() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _invalid_url(message: str, code: str = "invalid_url") -> InvalidInput:
    return InvalidInput(message, code=code, field="url")


def _host_is_valid(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    labels = ascii_host.lower().removesuffix(".").split(".")
    return len(ascii_host) <= 253 and all(_HOST_LABEL.match(label) for label in labels)


def webhook_url_validate(url: str) -> str:
    """The URL, stripped, if webhooks may be sent to it.

    Hosts that resolve to loopback, private or link-local addresses are
    refused (a webhook must not be a way to reach the platform's own
    network) unless `WEBHOOKS_ALLOW_PRIVATE_URLS` is set, as in development.
    """
    url = url.strip()
    if not url:
        raise _invalid_url("A URL is required.")
    if len(url) > MAX_URL_LENGTH:
        raise _invalid_url(f"The URL is too long ({MAX_URL_LENGTH} characters at most).")
    if any(char.isspace() or ord(char) < 32 or ord(char) == 127 for char in url):
        raise _invalid_url("The URL must not contain spaces or control characters.")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise _invalid_url("The URL must start with https:// or http://.")
    try:
        parts.port  # noqa: B018  # raises on a port that is not a number in range
    except ValueError:
        raise _invalid_url("The URL's port is not valid.") from None
    host = parts.hostname
    if not host or not _host_is_valid(host):
        raise _invalid_url("The URL has no valid host name.")
    if not settings.WEBHOOKS_ALLOW_PRIVATE_URLS and not url_is_public(url):
        raise _invalid_url(
            f"{host!r} does not resolve to a public address: webhooks are not sent to "
            "loopback, private or link-local addresses.",
            code="url_not_public",
        )
    return url


def webhook_events_validate(events: Sequence[str]) -> list[str]:
    """The event types subscribed to, each once, in the order given."""
    known = ", ".join(WEBHOOK_EVENT_TYPES)
    if not events:
        raise InvalidInput(
            f"Subscribe to at least one event type: {known}.",
            code="events_required",
            field="events",
        )
    for event in events:
        if event not in WEBHOOK_EVENT_TYPES:
            raise InvalidInput(
                f"{event!r} is not an event type: choose from {known}.",
                code="invalid_event",
                field="events",
            )
    return list(dict.fromkeys(events))


def webhook_endpoint_create(
    *, organization: Organization, url: str, events: Sequence[str]
) -> tuple[WebhookEndpoint, str]:
    """Register an endpoint; returns it and its secret, which the caller shows once."""
    url = webhook_url_validate(url)
    events = webhook_events_validate(events)
    with transaction.atomic():
        organization_cap_check(
            organization=organization,
            existing=WebhookEndpoint.objects.filter(organization=organization),
            cap=MAX_WEBHOOK_ENDPOINTS,
            refusal=InvalidInput(
                f"An organization can have at most {MAX_WEBHOOK_ENDPOINTS} webhook endpoints.",
                code="too_many_webhook_endpoints",
                field="url",
            ),
        )
        secret = webhook_secret_generate()
        endpoint = WebhookEndpoint.objects.create(
            organization=organization, url=url, secret=secret, events=events
        )
    return endpoint, secret


def webhook_endpoint_delete(*, endpoint: WebhookEndpoint) -> None:
    """Delete the endpoint; its undelivered messages fail for good when their turn comes."""
    endpoint.delete()
