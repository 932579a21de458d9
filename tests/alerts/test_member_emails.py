"""Alert emails fit their reader: a member told about their own usage is
spoken to ("You have used …") and sent to their usage page; an admin told
about the same firing reads about the member and is sent to Limits & Alerts.
Every link starts with SITE_URL.
"""

from __future__ import annotations

import re

import pytest
from django.core import mail

from alerts.models import Notification
from alerts.transports import alert_email_build
from tests.helpers import spend, user_alerts_on

SITE = "http://127.0.0.1:8765"
URL = re.compile(r"https?://[^\s\"'<>]+")


@pytest.fixture(autouse=True)
def site_url(settings):
    settings.SITE_URL = SITE


def parts(message):
    (html, mimetype) = message.alternatives[0]
    assert mimetype == "text/html"
    return message.body, html


def email_to(address):
    (message,) = [m for m in mail.outbox if m.to == [address]]
    return message


@pytest.fixture
def crossed(organization, owner, member, deliver):
    """The member crosses a per-user alert that tells them and the owner."""
    deliver(user_alerts_on, organization, 100, admins=[owner], notify_user=True)
    deliver(spend, member, 120, key="k1")
    assert len(mail.outbox) == 2


def test_the_member_is_spoken_to_and_sent_to_their_usage(crossed, member):
    message = email_to(member.user.email)
    text, html = parts(message)
    sentence = "You have used 120 credits this billing period, past the threshold of 100"
    assert sentence in message.subject
    for part in (text, html):
        assert sentence in part
        assert f"{SITE}/me/usage/" in part
        assert "/settings/limits/" not in part
        assert member.user.email not in part  # not spoken of in the third person


def test_the_admin_reads_about_the_member_and_is_sent_to_limits(crossed, owner, member):
    message = email_to(owner.user.email)
    text, html = parts(message)
    assert member.user.email in message.subject
    for part in (text, html):
        assert f"{member.user.email} used 100 credits" in part
        assert "You have used" not in part
        assert f"{SITE}/settings/limits/" in part
        assert "/me/usage/" not in part


def test_every_link_starts_with_site_url(crossed):
    for message in mail.outbox:
        for part in parts(message):
            links = URL.findall(part)
            assert links
            assert all(link.startswith(f"{SITE}/") for link in links), links


def test_the_relation_is_kept_in_the_payload(crossed, owner, member):
    relations = dict(Notification.objects.values_list("recipient", "payload__recipient"))
    assert relations == {owner.user.email: "admin", member.user.email: "member"}


def test_an_admin_chosen_who_crosses_is_told_once_as_an_admin(organization, owner, deliver):
    deliver(user_alerts_on, organization, 100, admins=[owner], notify_user=True)
    deliver(spend, owner, 120, key="k1")
    (message,) = mail.outbox
    text, _ = parts(message)
    assert "/settings/limits/" in text
    assert "You have used" not in text


def test_a_payload_without_a_relation_is_an_admins(crossed, member):
    notification = Notification.objects.get(recipient=member.user.email)
    payload = dict(notification.payload)
    del payload["recipient"]  # as written before the field existed
    message = alert_email_build(recipient=member.user.email, payload=payload, message_uid="x")
    text, html = parts(message)
    assert f"{SITE}/settings/limits/" in text and f"{SITE}/settings/limits/" in html
    assert "You have used" not in text


def test_figures_in_emails_group_their_thousands(organization, owner, member, deliver):
    deliver(user_alerts_on, organization, 12500, admins=[owner], notify_user=True)
    deliver(spend, member, "12500.5", key="big")

    for address in (member.user.email, owner.user.email):
        message = email_to(address)
        for body in (message.subject, *parts(message)):
            assert "12,500" in body, body
            assert "12500" not in body, body
