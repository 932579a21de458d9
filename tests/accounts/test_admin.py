from __future__ import annotations

import re

import pytest
from django.contrib import admin
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from accounts.models import ApiKey, Membership, Organization, User
from accounts.services import api_key_authenticate, api_key_create

REGISTERED = sorted(admin.site._registry.items(), key=lambda item: item[0]._meta.label)


@pytest.fixture
def staff_client(db) -> Client:
    superuser = User.objects.create_superuser("staff@headroom.test", "staff-password")
    client = Client()
    client.force_login(superuser)
    return client


@pytest.mark.parametrize(
    ("model", "model_admin"), REGISTERED, ids=[model._meta.label for model, _ in REGISTERED]
)
def test_every_changelist_and_add_page_loads(staff_client, owner, member, model, model_admin):
    info = (model._meta.app_label, model._meta.model_name)

    changelist = staff_client.get(reverse("admin:{}_{}_changelist".format(*info)))
    assert changelist.status_code == 200

    if model_admin.has_add_permission(changelist.wsgi_request):
        add = staff_client.get(reverse("admin:{}_{}_add".format(*info)))
        assert add.status_code == 200


def test_changelists_with_rows(staff_client, owner, member, outsider):
    api_key_create(organization=owner.organization, name="Host app")

    for model in (User, Organization, Membership, ApiKey):
        info = (model._meta.app_label, model._meta.model_name)
        response = staff_client.get(reverse("admin:{}_{}_changelist".format(*info)))
        assert response.status_code == 200
        assert response.context["cl"].result_count == model.objects.count() > 0


def test_change_pages_load(staff_client, owner):
    api_key, _ = api_key_create(organization=owner.organization)
    for obj in (owner.user, owner.organization, owner, api_key):
        info = (obj._meta.app_label, obj._meta.model_name)
        response = staff_client.get(reverse("admin:{}_{}_change".format(*info), args=[obj.pk]))
        assert response.status_code == 200


def test_user_search(staff_client, owner, member):
    response = staff_client.get(reverse("admin:accounts_user_changelist"), {"q": "member@"})

    assert [user.email for user in response.context["cl"].result_list] == ["member@acme.test"]


def test_adding_a_user_with_email_and_password(staff_client):
    response = staff_client.post(
        reverse("admin:accounts_user_add"),
        {
            "email": "New.Person@Example.test",
            "password1": "a-long-passphrase",
            "password2": "a-long-passphrase",
        },
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    user = User.objects.get(email="new.person@example.test")
    assert user.check_password("a-long-passphrase")


def test_adding_a_membership_defaults_external_id_to_email(staff_client, organization, outsider):
    response = staff_client.post(
        reverse("admin:accounts_membership_add"),
        {
            "organization": organization.pk,
            "user": outsider.user.pk,
            "role": "member",
            "external_id": "",
        },
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    membership = Membership.objects.get(organization=organization, user=outsider.user)
    assert membership.external_id == "admin@globex.test"


def test_the_add_api_key_form_asks_only_organization_and_name(staff_client):
    response = staff_client.get(reverse("admin:accounts_apikey_add"))

    form = response.context["adminform"].form
    assert list(form.fields) == ["organization", "name"]
    assert "key_hash" not in response.content.decode()


def test_adding_an_api_key_shows_the_raw_key_once(staff_client, organization):
    response = staff_client.post(
        reverse("admin:accounts_apikey_add"),
        {"organization": organization.pk, "name": "Host app"},
        follow=True,
    )

    assert response.status_code == 200
    [once] = [str(m) for m in response.context["messages"] if "shown only this once" in str(m)]
    raw_key = re.search(r"hr_[A-Za-z0-9_-]{40,}", once).group()
    assert response.content.decode().count(raw_key) == 1

    api_key = api_key_authenticate(raw_key=raw_key)
    assert api_key is not None
    assert api_key.organization == organization
    assert api_key.name == "Host app"
    assert ApiKey.objects.count() == 1

    again = staff_client.get(reverse("admin:accounts_apikey_change", args=[api_key.pk]))
    html = again.content.decode()
    assert raw_key not in html
    assert api_key.key_hash not in html
    assert not list(get_messages(again.wsgi_request))


def test_revoke_action(staff_client, organization):
    first, first_raw = api_key_create(organization=organization)
    second, second_raw = api_key_create(organization=organization)
    _kept, kept_raw = api_key_create(organization=organization)

    response = staff_client.post(
        reverse("admin:accounts_apikey_changelist"),
        {"action": "revoke_selected", "_selected_action": [first.pk, second.pk]},
    )

    assert response.status_code == 302
    assert api_key_authenticate(raw_key=first_raw) is None
    assert api_key_authenticate(raw_key=second_raw) is None
    assert api_key_authenticate(raw_key=kept_raw) is not None


def test_raising_the_allowance_in_the_admin_evaluates_alerts(
    client, organization, owner, django_capture_on_commit_callbacks
):
    from decimal import Decimal

    from django.core import mail

    from accounts.models import User
    from alerts.models import Firing
    from alerts.services import alert_create
    from billing.services import UsageInput, usage_ingest

    staff = User.objects.create_superuser("staff-eval@headroom.test", "pw-123456789")
    client.force_login(staff)
    alert_create(organization=organization, threshold_type="percentage", threshold=Decimal(50))
    usage_ingest(organization=organization, events=[UsageInput("k", Decimal(60))])
    assert not Firing.objects.exists()  # no allowance yet: a percentage cannot fire
    form = {
        "name": organization.name,
        "slug": organization.slug,
        "credit_allowance": "100",
        "block_when_exhausted": "on",
        "anchor_day": "1",
        "memberships-TOTAL_FORMS": "0",
        "memberships-INITIAL_FORMS": "0",
        "memberships-MIN_NUM_FORMS": "0",
        "memberships-MAX_NUM_FORMS": "1000",
    }
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/admin/accounts/organization/{organization.pk}/change/", form)
    assert response.status_code == 302, response.content[:2000]
    assert Firing.objects.get().value == Decimal(60)
    assert [m.to for m in mail.outbox] == [[owner.user.email]]
