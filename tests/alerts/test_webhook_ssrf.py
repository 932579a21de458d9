"""Webhook URLs are checked at connection time (SPEC §16): the address the
socket connects to, not the one a name resolved to when the endpoint was
registered. Every receiver here is a real local server on 127.0.0.1; the
fake resolver never hands a connection anything but a loopback address, so
no test can reach outside this machine.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from alerts import transports
from alerts.models import DeliveryStatus, Notification
from alerts.outbox import notification_deliver
from alerts.transports import address_is_public
from alerts.webhooks import webhook_endpoint_create
from tests.helpers import absolute_alert, ingest
from tests.stubs import webhook_receiver

pytestmark = pytest.mark.django_db

PUBLIC = "93.184.216.34"


@pytest.fixture
def rebinding_dns(monkeypatch):
    """`*.rebind.test` resolves to a public address when asked without a
    port (the checks of `url_is_public`, at registration) and to
    `rebinding_dns.target` when asked with one (what a connection asks).
    """
    real = socket.getaddrinfo

    class Resolver:
        target = "127.0.0.1"

        def __call__(self, host, port, *args, **kwargs):
            if not str(host).endswith(".rebind.test"):
                return real(host, port, *args, **kwargs)
            address = PUBLIC if port is None else self.target
            if ":" in address:
                return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port or 0, 0, 0))]
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port or 0))]

    resolver = Resolver()
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    return resolver


def webhook_to(organization, url):
    """Register an endpoint at `url` (checked now), fire an alert, return its webhook."""
    webhook_endpoint_create(organization=organization, url=url, events=["alert.triggered"])
    absolute_alert(organization, 1)
    ingest(organization, 5, key="k")
    return Notification.objects.get(channel="webhook")


@pytest.mark.parametrize("target", ["127.0.0.1", "::ffff:127.0.0.1"])
def test_a_name_rebound_to_loopback_after_registration_reaches_nothing(
    organization, owner, settings, rebinding_dns, target
):
    settings.WEBHOOKS_ALLOW_PRIVATE_URLS = False
    rebinding_dns.target = target
    with webhook_receiver() as receiver:
        port = receiver.url.rsplit(":", 1)[1].strip("/")
        webhook = webhook_to(organization, f"http://hooks.rebind.test:{port}/hook")

        notification_deliver(notification_id=webhook.pk)

        assert receiver.received == []
    webhook.refresh_from_db()
    assert webhook.status == DeliveryStatus.FAILED  # permanent: not retried
    assert webhook.attempts == 1
    assert webhook.last_error == (
        f"Refused to connect to hooks.rebind.test at {target}: a loopback, private, "
        "link-local or otherwise non-public address."
    )
    assert webhook.delivery_attempts.get().error == webhook.last_error


def test_the_same_rebinding_is_delivered_when_private_urls_are_allowed(
    organization, owner, settings, rebinding_dns
):
    """What the refusal above stands between: with the check off (development),
    the very same name and receiver get the webhook.
    """
    settings.WEBHOOKS_ALLOW_PRIVATE_URLS = True
    with webhook_receiver() as receiver:
        port = receiver.url.rsplit(":", 1)[1].strip("/")
        webhook = webhook_to(organization, f"http://hooks.rebind.test:{port}/hook")

        notification_deliver(notification_id=webhook.pk)

        assert [r.path for r in receiver.received] == ["/hook"]
    webhook.refresh_from_db()
    assert webhook.status == DeliveryStatus.SENT


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # shared address space (CGNAT)
        "0.0.0.0",
        "224.0.0.1",  # multicast: Python calls it global
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::ffff:169.254.169.254",
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    ],
)
def test_non_public_addresses(address):
    assert not address_is_public(address)


@pytest.mark.parametrize("address", [PUBLIC, "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses(address):
    assert address_is_public(address)


# TLS: the socket goes to a checked address, the certificate is still checked
# against the URL's host name.


@pytest.fixture
def certificate(tmp_path: Path):
    """A self-signed certificate and key for `name`, made by openssl."""

    def make(name: str) -> tuple[Path, Path]:
        cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}",
                "-addext", f"subjectAltName=DNS:{name}",
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        return cert, key

    return make


@pytest.fixture
def loopback_counts_as_public(monkeypatch, settings, rebinding_dns):
    """The check on, but 127.0.0.1 let through, so that a local HTTPS server
    can stand in for a public receiver behind `PublicAddressesOnly`.
    """
    settings.WEBHOOKS_ALLOW_PRIVATE_URLS = False
    monkeypatch.setattr(transports, "address_is_public", lambda address: True)


@pytest.mark.parametrize(
    ("certificate_name", "delivered"),
    [("hooks.rebind.test", True), ("someone-else.test", False)],
)
def test_tls_is_verified_against_the_host_name(
    organization, owner, monkeypatch, certificate, loopback_counts_as_public,
    certificate_name, delivered,
):  # fmt: skip
    cert, key = certificate(certificate_name)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trusted, for the name it carries
    with webhook_receiver(tls=(cert, key)) as receiver:
        webhook = webhook_to(organization, f"https://hooks.rebind.test:{receiver.port}/hook")

        notification_deliver(notification_id=webhook.pk)

        assert [r.path for r in receiver.received] == (["/hook"] if delivered else [])
    webhook.refresh_from_db()
    if delivered:
        assert webhook.status == DeliveryStatus.SENT
    else:
        assert webhook.status == DeliveryStatus.PENDING  # a TLS failure is retried
        assert "CERTIFICATE_VERIFY_FAILED" in webhook.last_error
        assert "hooks.rebind.test" in webhook.last_error
