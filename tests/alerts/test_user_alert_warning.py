"""Turning on Credit Usage Alerts says first whom it would email at once,
lets the admin choose not to tell members already past the threshold (those
who cross it later still are), and refuses a policy that would tell nobody.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core import mail
from django.urls import reverse

from alerts.models import Firing, UserAlertPolicy
from alerts.services.configuration import user_alert_policy_update
from tests.factories import MembershipFactory
from tests.fixtures import logged_in
from tests.helpers import spend, user_alerts_form, user_alerts_on

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}
NOTE = {**HTMX, "HX-Target": "user-alerts-already-past"}
SAVE = "/settings/limits/user-alerts/"
API = "/api/v1/user-alerts"


@pytest.fixture
def team(organization, owner, member):
    """Two members past 100 credits (one at 12,500), one below it."""
    spend(member, 150)
    past = MembershipFactory(organization=organization, user__email="big@acme.test")
    spend(past, 12500)
    below = MembershipFactory(organization=organization, user__email="below@acme.test")
    spend(below, 60)
    return {"past": [member, past], "below": below}


# What the page says before saving


def test_the_page_says_how_many_members_are_already_past(owner, team):
    user_alert_policy_update(
        organization=owner.organization, threshold=Decimal(100), admins=[owner], notify_user=True
    )

    html = logged_in(owner).get("/settings/limits/").content.decode()

    assert "2 members are already past 100 credits this period" in html
    assert "nobody is told while Credit Usage Alerts are off" in html
    assert "Notify at once if usage is already past this threshold" in html
    assert 'id="id_user_alerts-fire_if_already_exceeded" checked' in html


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        (
            {"notify_user": "on", "admins": "ADMIN", "fire_if_already_exceeded": "on"},
            "they and the admins chosen will be emailed when you save.",
        ),
        (
            {"notify_user": "on", "fire_if_already_exceeded": "on"},
            "they will be emailed when you save.",
        ),
        (
            {"admins": "ADMIN", "fire_if_already_exceeded": "on"},
            "the admins chosen will be emailed about them when you save.",
        ),
        (
            {"notify_user": "on", "admins": "ADMIN"},
            "with “Notify at once” off, they are not told this period",
        ),
        ({"fire_if_already_exceeded": "on"}, "nobody would be told"),
    ],
)
def test_the_note_follows_the_form_as_it_is_filled_in(owner, team, fields, says):
    fields = {k: (str(owner.pk) if v == "ADMIN" else v) for k, v in fields.items()}

    response = logged_in(owner).get("/settings/limits/", user_alerts_form(**fields), headers=NOTE)

    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in html and 'id="credit-usage-alerts"' not in html  # the note alone
    assert "2 members are already past 100 credits this period" in html
    assert says in html


def test_the_note_counts_for_the_threshold_typed(owner, team):
    client = logged_in(owner)

    html = client.get(
        "/settings/limits/", user_alerts_form(threshold="10000"), headers=NOTE
    ).content.decode()
    assert "1 member is already past 10,000 credits this period" in html

    html = client.get(
        "/settings/limits/", user_alerts_form(threshold="50000"), headers=NOTE
    ).content.decode()
    assert "No member is past 50,000 credits this period yet." in html

    html = client.get(
        "/settings/limits/", user_alerts_form(threshold=""), headers=NOTE
    ).content.decode()
    assert "already past" not in html


def test_members_already_told_are_not_counted_again(owner, team, deliver):
    deliver(user_alerts_on, owner.organization, 100, admins=[owner])
    assert Firing.objects.count() == 2

    html = (
        logged_in(owner).get("/settings/limits/", user_alerts_form(), headers=NOTE).content.decode()
    )
    # Not "no member is past it": two are, and the history shows them told.
    assert "All 2 members past 100 credits this period have been told." in html
    assert "No member is past" not in html
    # A new threshold is a new arming: members past it are counted again.
    html = (
        logged_in(owner)
        .get("/settings/limits/", user_alerts_form(threshold="120"), headers=NOTE)
        .content
    ).decode()
    assert "2 members are already past 120 credits this period" in html


# Saving with "Notify at once" off


@pytest.mark.parametrize("htmx", [True, False])
def test_unticked_tells_nobody_now_but_a_member_who_crosses_later(
    owner, team, deliver, django_capture_on_commit_callbacks, htmx
):
    client = logged_in(owner)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            SAVE,
            user_alerts_form(notify_user="on", admins=[str(owner.pk)]),
            headers=HTMX if htmx else {},
        )
    assert response.status_code == (200 if htmx else 302)
    assert mail.outbox == []
    assert not Firing.objects.exists()

    deliver(spend, team["past"][0], 50)  # already past: not told this period
    assert mail.outbox == []

    below = team["below"]
    deliver(spend, below, 40)  # 60 -> 100: crosses now
    assert Firing.objects.get().membership == below
    assert sorted(m.to[0] for m in mail.outbox) == sorted([owner.user.email, below.user.email])

    # The choice shows when the page is opened again.
    html = client.get("/settings/limits/").content.decode()
    assert 'id="id_user_alerts-fire_if_already_exceeded" checked' not in html
    assert "Notify at once if usage is already past this threshold" in html


def test_ticked_tells_the_members_already_past_at_once(
    owner, team, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = logged_in(owner).post(
            SAVE,
            user_alerts_form(notify_user="on", fire_if_already_exceeded="on"),
            headers=HTMX,
        )
    assert response.status_code == 200
    assert sorted(m.to[0] for m in mail.outbox) == sorted(m.user.email for m in team["past"])


def test_a_quiet_choice_is_kept_by_later_changes_elsewhere(owner, team, deliver):
    organization = owner.organization
    deliver(user_alerts_on, organization, 100, admins=[owner], fire_if_already_exceeded=False)
    # A change that re-evaluates every alert (here the policy's own, without
    # saying anything about notifying at once) does not tell them either.
    deliver(user_alert_policy_update, organization=organization, notify_user=True)
    assert not Firing.objects.exists()
    # Saved again with "notify at once": those not told yet are told now.
    deliver(user_alert_policy_update, organization=organization, fire_if_already_exceeded=True)
    assert Firing.objects.count() == 2


# A policy that would tell nobody


@pytest.mark.parametrize("htmx", [True, False])
def test_a_policy_that_tells_nobody_is_refused_in_the_page(owner, team, htmx):
    response = logged_in(owner).post(
        SAVE, user_alerts_form(fire_if_already_exceeded="on"), headers=HTMX if htmx else {}
    )

    assert response.status_code == 422
    html = response.content.decode()
    assert "Choose at least one admin to notify, or notify the member" in html
    assert 'id="credit-usage-alerts"' in html
    assert not UserAlertPolicy.objects.filter(enabled=True).exists()
    assert not Firing.objects.exists()


def test_a_policy_turned_off_needs_nobody(owner):
    response = logged_in(owner).post(SAVE, {"user_alerts-threshold": "100"}, headers=HTMX)
    assert response.status_code == 200


# The API


def test_the_api_refuses_a_policy_that_tells_nobody(api):
    response = api.put(API, {"enabled": True, "threshold": 100})

    assert response.status_code == 422
    assert response.json()["error"]["field"] == "admins"
    assert response.json()["error"]["code"] == "nobody_to_notify"
    assert not UserAlertPolicy.objects.filter(enabled=True).exists()


def test_the_api_can_leave_members_already_past_untold(api, owner, team, deliver):
    response = deliver(
        api.put,
        API,
        {
            "enabled": True,
            "threshold": 100,
            "notify_user": True,
            "fire_if_already_exceeded": False,
        },
    )
    assert response.status_code == 200
    assert "fire_if_already_exceeded" not in response.json()  # write-only
    assert not Firing.objects.exists()
    assert mail.outbox == []

    deliver(spend, team["below"], 45)
    assert [m.to for m in mail.outbox] == [[team["below"].user.email]]


def test_the_api_notifies_at_once_by_default(api, team, deliver):
    deliver(api.put, API, {"enabled": True, "threshold": 100, "notify_user": True})
    assert Firing.objects.count() == 2


@pytest.mark.parametrize("value", [None, "yes", 1])
def test_the_api_refuses_a_bad_fire_if_already_exceeded(api, value):
    response = api.put(API, {"threshold": 100, "fire_if_already_exceeded": value})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "fire_if_already_exceeded"


def test_the_django_admin_refuses_a_policy_that_tells_nobody(staff_client, organization):
    response = staff_client.post(
        reverse("admin:alerts_useralertpolicy_add"),
        {"organization": organization.pk, "enabled": "on", "threshold": "40"},
    )

    assert response.status_code == 200  # the form again, with the error
    assert "would tell nobody" in str(response.context["adminform"].form.errors)
    assert not UserAlertPolicy.objects.exists()
