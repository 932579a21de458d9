"""Hostile values in every form of the pages: oversize, negative,
non-numeric, unicode and HTML-bearing. Each gets an error, stores nothing,
and everything echoed back is escaped.
"""

from __future__ import annotations

import pytest
from django.test import Client

from accounts.models import ApiKey, AuditEvent
from alerts.models import OrganizationAlert, UserAlertPolicy
from billing.models import CustomLimit, UsageEvent, UserLimitPolicy
from tests.fixtures import logged_in
from tests.helpers import response_html

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}
SCRIPT = "<script>alert('x')</script>"
HOSTILE = [
    "9" * 5000,  # oversize
    "-5",
    "0",
    "five",
    "1e999999",
    "NaN",
    "Infinity",
    "\uff11\uff12",  # full-width digits: only ASCII digits are read, as in the API
    "12\u202e",  # a right-to-left override
    "🤑",
    SCRIPT,
    "1.1234567",
]


def stored_nothing() -> bool:
    return not (
        OrganizationAlert.objects.exists()
        or UserAlertPolicy.objects.filter(enabled=True).exists()
        or UserLimitPolicy.objects.filter(enabled=True).exists()
        or CustomLimit.objects.exists()
        or UsageEvent.objects.exists()
        or AuditEvent.objects.exists()
    )


def forms(member_id: int, value: str) -> list[tuple[str, dict[str, str]]]:
    return [
        (
            "/settings/limits/alerts/new/",
            {
                "alert-threshold_type": "absolute",
                "alert-threshold": value,
                "alert-notify": "all_admins",
            },
        ),
        (
            "/settings/limits/alerts/new/",
            {"alert-threshold_type": value, "alert-threshold": "5", "alert-notify": value},
        ),
        (
            "/settings/limits/user-alerts/",
            {"user_alerts-enabled": "on", "user_alerts-threshold": value},
        ),
        (
            "/settings/limits/user-limits/",
            {"user_limits-enabled": "on", "user_limits-default_limit": value},
        ),
        (
            "/settings/limits/custom-limits/",
            {"custom_limit-user": str(member_id), "custom_limit-credit_limit": value},
        ),
        (
            "/settings/limits/custom-limits/",
            {"custom_limit-user": value, "custom_limit-credit_limit": "5"},
        ),
        (f"/settings/members/{member_id}/role/", {"role": value}),
    ]


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("htmx", [True, False])
def test_hostile_values_are_refused_stored_nowhere_and_escaped(owner, member, value, htmx):
    client = logged_in(owner)

    for path, data in forms(member.pk, value):
        response = client.post(path, data, headers=HTMX if htmx else {})
        html = response.content.decode()
        assert response.status_code == 422, (path, data)
        assert "field-errors" in html or 'role="alert"' in html
        assert SCRIPT not in html
        if value == SCRIPT:
            assert "&lt;script&gt;" in html or "valid" in html

    assert stored_nothing()


@pytest.mark.parametrize("value", [SCRIPT, "x" * 10_000, "%00", "🤑", "' OR 1=1 --"])
def test_the_member_search_escapes_and_survives_anything(owner, value):
    client = logged_in(owner)

    response = client.get("/members/search/", {"q": value, "role": value})
    members_page = client.get("/settings/members/", {"q": value, "page": value})
    members_list = client.get(
        "/settings/members/", {"q": value}, headers={**HTMX, "HX-Target": "member-list"}
    )

    assert response.status_code == 200
    assert SCRIPT not in response.content.decode()
    for answer in (members_page, members_list):
        assert answer.status_code == 200
        assert SCRIPT not in answer.content.decode()


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("htmx", [True, False])
def test_api_key_names_are_bounded_and_escaped(owner, value, htmx):
    """Any text of 100 characters or fewer names a key (shown escaped); longer is a 422."""
    client = logged_in(owner)

    response = client.post("/settings/api-keys/", {"name": value}, headers=HTMX if htmx else {})
    page = client.get("/settings/api-keys/").content.decode()

    assert SCRIPT not in response.content.decode() and SCRIPT not in page
    if len(value) > 100:
        assert response.status_code == 422
        assert "field-errors" in response.content.decode()
        assert not ApiKey.objects.exists()
    else:
        assert response.status_code == 201
        assert list(ApiKey.objects.values_list("name", flat=True)) == [value.strip()]


@pytest.mark.parametrize("value", [SCRIPT, "x" * 600, "🤑" * 10])
def test_the_assistant_prompt_is_escaped_and_bounded(member, value):
    client = logged_in(member)

    response = client.post("/assistant/", {"prompt": value}, headers=HTMX)
    html = response_html(response)  # a run streams its reply

    assert response.status_code == 200
    assert SCRIPT not in html
    if len(value) > 500:
        assert "at most 500 characters" in html
        assert not UsageEvent.objects.exists()
    else:
        assert "Assistant reply" in html


@pytest.mark.parametrize("value", [SCRIPT, "x" * 5000, "a@b", "🤑@🤑.test"])
def test_the_login_form_escapes_and_refuses(db, value):
    response = Client().post("/accounts/login/", {"email": value, "password": value})

    assert response.status_code == 200
    assert SCRIPT not in response.content.decode()
