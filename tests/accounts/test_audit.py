"""The audit trail: every change to alerts, limits policies and custom limits
records who, when, before and after, whichever door it came through.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from accounts.models import AuditEvent
from alerts.services.changes import custom_limit_delete, custom_limit_set, limit_policy_update
from alerts.services.configuration import alert_update
from billing.models import CustomLimit
from tests.factories import UserFactory
from tests.fixtures import logged_in
from tests.helpers import absolute_alert, limits_on, user_alerts_on

pytestmark = pytest.mark.django_db

D = Decimal
HTMX = {"HX-Request": "true"}


def test_an_alert_added_edited_and_deleted_on_the_page_is_audited(owner):
    client = logged_in(owner.user)
    client.post(
        "/settings/limits/alerts/new/",
        {
            "alert-threshold_type": "absolute",
            "alert-threshold": "100",
            "alert-notify": "all_admins",
        },
        headers=HTMX,
    )
    alert_id = AuditEvent.objects.get().target_id
    client.post(
        f"/settings/limits/alerts/{alert_id}/",
        {
            "alert-threshold_type": "percentage",
            "alert-threshold": "80",
            "alert-notify": "specific_admins",
            "alert-admins": [str(owner.pk)],
        },
        headers=HTMX,
    )
    client.post(f"/settings/limits/alerts/{alert_id}/delete/", headers=HTMX)

    created, updated, deleted = AuditEvent.objects.order_by("id")
    assert (created.action, updated.action, deleted.action) == (
        "alert.created",
        "alert.updated",
        "alert.deleted",
    )
    assert {e.actor for e in (created, updated, deleted)} == {"owner@acme.test"}
    assert created.actor_user == owner.user
    assert created.organization == owner.organization
    assert created.before is None
    assert created.after == {
        "meter": "credits",
        "source": "organization",
        "enabled": True,
        "threshold_type": "absolute",
        "threshold": "100",
        "notify": "all_admins",
        "admins": [],
    }
    assert updated.before == created.after
    assert updated.after == {
        "meter": "credits",
        "source": "organization",
        "enabled": True,
        "threshold_type": "percentage",
        "threshold": "80",
        "notify": "specific_admins",
        "admins": ["owner@acme.test"],
    }
    assert deleted.before == updated.after and deleted.after is None


def test_changes_through_the_api_name_the_key(api, owner):
    response = api.put("/api/v1/user-limits", {"enabled": True, "default_limit": "250"})

    assert response.status_code == 200
    event = AuditEvent.objects.get()
    assert event.action == "limit_policy.updated"
    assert event.actor.startswith("API key hr_")
    assert event.actor_api_key is not None and event.actor_user is None
    assert event.before == {
        "enabled": False,
        "default_limit": None,
        "excluded_sources": [],
        "admins": [],
    }
    assert event.after["enabled"] is True and event.after["default_limit"] == "250"


def test_changes_outside_a_request_are_by_the_system(organization, owner, member):
    user_alerts_on(organization, 50, notify_user=True)
    custom_limit_set(organization=organization, membership=member, limit=D(10))
    custom_limit_set(organization=organization, membership=member, limit=None)
    custom_limit_delete(custom_limit=CustomLimit.objects.get(membership=member))

    events = list(AuditEvent.objects.order_by("id"))
    assert [e.action for e in events] == [
        "user_alert_policy.updated",
        "custom_limit.set",
        "custom_limit.set",
        "custom_limit.deleted",
    ]
    assert {e.actor for e in events} == {"system"}
    _, first, second, removed = events
    assert (first.before, first.after) == (None, {"user": "member@acme.test", "limit": "10"})
    assert (second.before, second.after) == (
        {"user": "member@acme.test", "limit": "10"},
        {"user": "member@acme.test", "limit": None},  # unlimited
    )
    assert (removed.before, removed.after) == (second.after, None)


def test_a_save_that_changes_nothing_records_nothing(organization, owner):
    alert = absolute_alert(organization, 5)
    limits_on(organization, 5)
    count = AuditEvent.objects.count()

    alert_update(alert=alert, threshold=D(5))
    limit_policy_update(organization=organization, enabled=True)

    assert AuditEvent.objects.count() == count


def test_edits_in_the_django_admin_name_the_staff_member(organization, owner):
    staff = UserFactory(email="staff@headroom.test", is_staff=True, is_superuser=True)
    alert = absolute_alert(organization, 5)

    response = logged_in(staff).post(
        f"/admin/alerts/organizationalert/{alert.pk}/change/",
        {
            "organization": organization.pk,
            "threshold_type": "absolute",
            "threshold": "7",
            "notify": "all_admins",
        },
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    event = AuditEvent.objects.get(action="alert.updated")
    assert event.actor == "staff@headroom.test"
    assert event.after["threshold"] == "7"


def test_the_trail_is_visible_and_read_only_in_the_django_admin(organization, owner):
    staff = UserFactory(email="staff@headroom.test", is_staff=True, is_superuser=True)
    absolute_alert(organization, 5)
    event = AuditEvent.objects.get()
    client = logged_in(staff)

    listing = client.get("/admin/accounts/auditevent/?q=acme")
    detail = client.get(f"/admin/accounts/auditevent/{event.pk}/change/")
    add = client.get("/admin/accounts/auditevent/add/")
    delete = client.post(f"/admin/accounts/auditevent/{event.pk}/delete/", {"post": "yes"})

    assert listing.status_code == 200 and "alert.created" in listing.content.decode()
    assert detail.status_code == 200
    assert "&quot;threshold&quot;: &quot;5&quot;" in detail.content.decode()
    assert add.status_code == 403
    assert delete.status_code == 403
    assert AuditEvent.objects.filter(pk=event.pk).exists()
