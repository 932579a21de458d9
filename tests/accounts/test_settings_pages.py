"""The Members and API Keys pages (SPEC §6), for admins: by htmx and as
plain form posts, members get the 403 page, another organization's admin a
404 on Acme's objects, bad input a 422 with nothing stored, and the only
admin can neither step down nor leave.
"""

from __future__ import annotations

from unittest import mock

import pytest
from django.test import Client

from accounts.models import ApiKey, Membership, Role, User
from accounts.services import api_key_authenticate, api_key_create, api_key_revoke
from accounts.web import ADMIN_REQUIRED_MESSAGE
from alerts.services.changes import membership_update
from config.errors import InvalidInput
from tests.factories import AdminMembershipFactory, MembershipFactory
from tests.fixtures import logged_in, run_at_once

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}
MEMBERS = "/settings/members/"
API_KEYS = "/settings/api-keys/"


def role_url(membership: Membership) -> str:
    return f"/settings/members/{membership.pk}/role/"


def remove_url(membership: Membership) -> str:
    return f"/settings/members/{membership.pk}/remove/"


def revoke_url(api_key: ApiKey) -> str:
    return f"/settings/api-keys/{api_key.pk}/revoke/"


def role_of(membership: Membership) -> str:
    return Membership.objects.get(pk=membership.pk).role


# Members: the list and its search


def test_the_list_shows_each_member_as_this_organization_names_them(owner, member):
    member.user.name = "Mona Her Own Name"
    member.user.save()
    member.name = "Mona in Acme"
    member.external_id = "host-42"
    member.save()

    response = logged_in(owner).get(MEMBERS)

    html = response.content.decode()
    assert response.status_code == 200
    assert "<h1>Members</h1>" in html
    assert "Mona in Acme" in html
    assert "Mona Her Own Name" not in html  # the user's own name: Acme calls her otherwise
    assert "member@acme.test" in html and "host-42" in html
    assert (
        f'<label class="visually-hidden" for="role-{member.pk}">Role of Mona in Acme</label>'
        in (html)
    )
    assert '<option value="member" selected>Member</option>' in html
    assert '<label for="member-search">Search members</label>' in html
    assert 'hx-trigger="input changed delay:300ms' in html


def test_the_search_filters_by_name_email_or_external_id(owner, organization):
    ada = MembershipFactory(organization=organization, user__name="Ada Lovelace")
    MembershipFactory(organization=organization, user__name="Alan Turing", external_id="ext-77")
    client = logged_in(owner)

    by_name = client.get(MEMBERS, {"q": "lovel"}, headers={**HTMX, "HX-Target": "member-list"})
    by_id = client.get(MEMBERS, {"q": "EXT-7"})
    by_email = client.get(MEMBERS, {"q": ada.user.email})
    nobody = client.get(MEMBERS, {"q": "zzz"}, headers={**HTMX, "HX-Target": "member-list"})

    fragment = by_name.content.decode()
    assert "<html" not in fragment and 'id="member-list"' in fragment  # just the list
    assert "Ada Lovelace" in fragment and "Alan Turing" not in fragment
    assert "Alan Turing" in by_id.content.decode()
    assert "Ada Lovelace" not in by_id.content.decode()
    assert "Ada Lovelace" in by_email.content.decode()
    assert "No members match “zzz”" in nobody.content.decode()


def test_the_list_is_paginated_keeping_the_search(owner, organization):
    for i in range(30):
        MembershipFactory(organization=organization, user__name=f"Zed {i:02}")
    client = logged_in(owner)

    first = client.get(MEMBERS, {"q": "zed"}).content.decode()
    second = client.get(MEMBERS, {"q": "zed", "page": "2"}).content.decode()

    assert first.count('class="role-form"') == 25
    assert "Page 1 of 2 · 30 in all" in first
    assert "/settings/members/?q=zed&amp;page=2" in first
    assert second.count('class="role-form"') == 5
    assert "Zed 29" in second and "Zed 00" not in second


@pytest.mark.parametrize("page", ["abc", "-1", "9" * 40])
def test_bad_page_numbers_show_the_first_page_of_the_search(owner, member, page):
    response = logged_in(owner).get(MEMBERS, {"page": page, "q": "member@"})

    html = response.content.decode()
    assert response.status_code == 200
    assert "member@acme.test" in html and "owner@acme.test" not in html


def test_an_overlong_search_is_ignored(owner):
    response = logged_in(owner).get(MEMBERS, {"q": "x" * 500})

    assert response.status_code == 200
    assert "owner@acme.test" in response.content.decode()


@pytest.fixture
def thousands(owner):
    organization = owner.organization
    users = User.objects.bulk_create(
        User(email=f"m{i}@big.test", name=f"Member {i}") for i in range(2000)
    )
    Membership.objects.bulk_create(
        Membership(organization=organization, user=user, role=Role.MEMBER, external_id=user.email)
        for user in users
    )
    return organization


def test_queries_are_bounded_with_2000_members(owner, thousands, django_assert_max_num_queries):
    client = logged_in(owner)
    client.get(MEMBERS)

    with django_assert_max_num_queries(10):
        page = client.get(MEMBERS)
    with django_assert_max_num_queries(10):
        search = client.get(
            MEMBERS, {"q": "Member 1", "page": "3"}, headers={**HTMX, "HX-Target": "member-list"}
        )
    with django_assert_max_num_queries(10):
        api_keys = client.get(API_KEYS)

    assert "Page 1 of 81 · 2,001 in all" in page.content.decode()
    assert page.content.decode().count('class="role-form"') == 25
    assert "Page 3 of 45 · 1,111 in all" in search.content.decode()
    assert api_keys.status_code == 200


# Members: the role


def test_an_admin_makes_a_member_an_admin_by_htmx(owner, member):
    with mock.patch("alerts.services.changes.alerts_evaluate_organization") as evaluate:
        response = logged_in(owner).post(role_url(member), {"role": "admin"}, headers=HTMX)

    assert response.status_code == 200
    assert response["HX-Reswap"] == "none"
    assert f"{member.display_name} is now an Admin." in response.content.decode()
    assert role_of(member) == Role.ADMIN
    # Through membership_update, which re-evaluates alerts on a role change.
    evaluate.assert_called_once_with(organization=owner.organization)


def test_an_admin_changes_a_role_without_javascript(owner, member, organization):
    second_admin = AdminMembershipFactory(organization=organization)
    client = logged_in(owner)

    response = client.post(role_url(second_admin), {"role": "member"})

    assert response.status_code == 302
    assert response["Location"] == MEMBERS
    assert role_of(second_admin) == Role.MEMBER
    assert "is now a Member." in client.get(MEMBERS).content.decode()


@pytest.mark.parametrize("role", ["", "owner", "ADMIN", "<script>alert('x')</script>"])
@pytest.mark.parametrize("htmx", [True, False])
def test_a_bad_role_is_a_422_that_changes_nothing(owner, member, role, htmx):
    response = logged_in(owner).post(role_url(member), {"role": role}, headers=HTMX if htmx else {})

    html = response.content.decode()
    assert response.status_code == 422
    assert "Choose Admin or Member." in html
    assert "<script>alert" not in html
    assert role_of(member) == Role.MEMBER
    if htmx:
        assert html.lstrip().startswith(f'<tr id="member-{member.pk}"')


@pytest.mark.parametrize("htmx", [True, False])
def test_the_only_admin_cannot_step_down(owner, member, htmx):
    response = logged_in(owner).post(
        role_url(owner), {"role": "member"}, headers=HTMX if htmx else {}
    )

    html = response.content.decode()
    assert response.status_code == 422
    assert "You are the only admin of Acme Inc: make another member an admin" in html
    assert role_of(owner) == Role.ADMIN
    # The select shows the role as stored, not the one refused.
    assert '<option value="admin" selected>Admin</option>' in html


def test_an_admin_who_steps_down_beside_another_admin_goes_home(owner, organization):
    AdminMembershipFactory(organization=organization)
    client = logged_in(owner)

    response = client.post(role_url(owner), {"role": "member"}, headers=HTMX)

    assert response.status_code == 200
    assert response["HX-Redirect"] == "/"
    assert role_of(owner) == Role.MEMBER
    assert client.get(MEMBERS).status_code == 403


# Members: removal


def test_removing_a_member_asks_first_then_removes_by_htmx(owner, member):
    client = logged_in(owner)

    confirm = client.get(remove_url(member), headers=HTMX)
    assert confirm.status_code == 200
    assert "Remove member@acme.test" not in confirm.content.decode()  # named by their name
    assert f"Remove {member.display_name} (member@acme.test) from Acme Inc?" in (
        confirm.content.decode()
    )
    assert Membership.objects.filter(pk=member.pk).exists()

    response = client.post(remove_url(member), headers=HTMX)

    html = response.content.decode()
    assert response.status_code == 200
    assert response["HX-Reswap"] == "none"
    assert "closeDialog" in response["HX-Trigger"]
    assert 'id="member-list"' in html and 'hx-swap-oob="true"' in html
    assert f"{member.display_name} was removed." in html
    assert "member@acme.test" not in html.split("was removed")[0]
    assert not Membership.objects.filter(pk=member.pk).exists()


def test_the_list_refreshed_after_a_removal_keeps_the_search(owner, member, organization):
    MembershipFactory(organization=organization, user__name="Kept Out")
    client = logged_in(owner)

    response = client.post(
        remove_url(member),
        headers={**HTMX, "HX-Current-URL": "http://testserver/settings/members/?q=owner"},
    )

    html = response.content.decode()
    assert "owner@acme.test" in html
    assert "Kept Out" not in html


def test_removing_a_member_without_javascript(owner, member):
    client = logged_in(owner)

    confirm = client.get(remove_url(member))
    assert confirm.status_code == 200
    assert "<html" in confirm.content.decode()
    assert f'action="{remove_url(member)}"' in confirm.content.decode()

    response = client.post(remove_url(member))

    assert response.status_code == 302
    assert response["Location"] == MEMBERS
    assert not Membership.objects.filter(pk=member.pk).exists()


@pytest.mark.parametrize("htmx", [True, False])
def test_the_only_admin_cannot_remove_themselves(owner, member, htmx):
    response = logged_in(owner).post(remove_url(owner), headers=HTMX if htmx else {})

    assert response.status_code == 422
    assert "You are the only admin of Acme Inc" in response.content.decode()
    assert Membership.objects.filter(pk=owner.pk, role=Role.ADMIN).exists()


def test_an_admin_may_leave_when_another_admin_stays(owner, organization):
    AdminMembershipFactory(organization=organization)

    response = logged_in(owner).post(remove_url(owner), headers=HTMX)

    assert response["HX-Redirect"] == "/"
    assert not Membership.objects.filter(pk=owner.pk).exists()


def test_an_admin_removes_another_admin(owner, organization):
    other = AdminMembershipFactory(organization=organization)

    response = logged_in(owner).post(remove_url(other))

    assert response.status_code == 302
    assert not Membership.objects.filter(pk=other.pk).exists()


# API keys


def test_the_page_lists_keys_with_revoked_ones_as_revoked(owner, other_organization):
    active, _ = api_key_create(organization=owner.organization, name="Production app")
    revoked, _ = api_key_create(organization=owner.organization, name="Old laptop")
    api_key_revoke(api_key=revoked)
    api_key_create(organization=other_organization, name="Globex secret app")

    html = logged_in(owner).get(API_KEYS).content.decode()

    assert "<h1>API Keys</h1>" in html
    assert "Production app" in html and f"{active.prefix}…" in html
    assert "Globex secret app" not in html
    assert html.count('badge-danger">Revoked') == 1
    assert html.count('badge-success">Active') == 1
    assert revoke_url(active) in html and revoke_url(revoked) not in html
    assert "Never" in html  # neither key has been used


def test_creating_a_key_by_htmx_shows_it_once(owner):
    client = logged_in(owner)

    response = client.post(API_KEYS, {"name": "  Production app "}, headers=HTMX)

    html = response.content.decode()
    api_key = ApiKey.objects.get()
    raw_key = html.split('id="new-api-key" class="mono key-value" value="')[1].split('"')[0]
    assert response.status_code == 201
    assert "no-store" in response["Cache-Control"]
    assert api_key.name == "Production app"
    assert api_key.key_hash not in html and raw_key.startswith("hr_")
    authenticated = api_key_authenticate(raw_key=raw_key)
    assert authenticated is not None and authenticated.pk == api_key.pk
    assert "it will not be shown again" in html
    assert 'id="api-key-list" aria-labelledby="api-key-list-title" hx-swap-oob="true"' in html
    assert "API key “Production app” created." in html
    # Never again: not on the page, not after a reload.
    assert raw_key not in client.get(API_KEYS).content.decode()


def test_creating_a_key_without_javascript(owner):
    response = logged_in(owner).post(API_KEYS, {"name": "CI"})

    html = response.content.decode()
    assert ApiKey.objects.count() == 1
    assert response.status_code == 201
    assert "<html" in html and "it will not be shown again" in html
    raw_key = html.split('value="hr_')[1].split('"')[0]
    assert api_key_authenticate(raw_key="hr_" + raw_key) is not None


@pytest.mark.parametrize("name", ["", "   ", "x" * 101])
@pytest.mark.parametrize("htmx", [True, False])
def test_a_bad_name_is_a_422_that_stores_no_key(owner, name, htmx):
    response = logged_in(owner).post(API_KEYS, {"name": name}, headers=HTMX if htmx else {})

    html = response.content.decode()
    assert response.status_code == 422
    assert "field-errors" in html
    assert 'value="hr_' not in html
    assert not ApiKey.objects.exists()


def test_revoking_a_key_asks_first_then_revokes_by_htmx(owner):
    api_key, raw_key = api_key_create(organization=owner.organization, name="Old app")
    client = logged_in(owner)

    confirm = client.get(revoke_url(api_key), headers=HTMX)
    assert f"Revoke the API key “Old app” ({api_key.prefix}…)?" in confirm.content.decode()
    assert ApiKey.objects.get().revoked_at is None

    response = client.post(revoke_url(api_key), headers=HTMX)

    html = response.content.decode()
    assert response.status_code == 200
    assert "closeDialog" in response["HX-Trigger"]
    assert 'badge-danger">Revoked' in html
    assert ApiKey.objects.get().revoked_at is not None
    assert api_key_authenticate(raw_key=raw_key) is None


def test_revoking_a_key_without_javascript(owner):
    api_key, _ = api_key_create(organization=owner.organization)
    client = logged_in(owner)

    assert "<html" in client.get(revoke_url(api_key)).content.decode()
    response = client.post(revoke_url(api_key))

    assert response.status_code == 302
    assert response["Location"] == API_KEYS
    assert ApiKey.objects.get().revoked_at is not None


# Who may


def all_pages(member: Membership, api_key: ApiKey) -> list[tuple[str, str]]:
    return [
        ("get", MEMBERS),
        ("post", role_url(member)),
        ("get", remove_url(member)),
        ("post", remove_url(member)),
        ("get", API_KEYS),
        ("post", API_KEYS),
        ("get", revoke_url(api_key)),
        ("post", revoke_url(api_key)),
    ]


def test_members_get_the_403_page_and_change_nothing(owner, member):
    api_key, _ = api_key_create(organization=owner.organization)
    client = logged_in(member)

    for method, path in all_pages(owner, api_key):
        data = {"role": "member", "name": "sneaky"} if method == "post" else None
        response = getattr(client, method)(path, data)
        assert response.status_code == 403, path
        assert ADMIN_REQUIRED_MESSAGE in response.content.decode()

    assert role_of(owner) == Role.ADMIN
    assert list(ApiKey.objects.values_list("revoked_at", flat=True)) == [None]


def test_another_organizations_admin_gets_404_on_acmes_objects(owner, member, outsider):
    api_key, _ = api_key_create(organization=owner.organization, name="Acme key")
    client = logged_in(outsider)

    for method, path in all_pages(member, api_key):
        if path in (MEMBERS, API_KEYS):
            continue
        response = getattr(client, method)(path, {"role": "admin"} if method == "post" else None)
        assert response.status_code == 404, path
    pages = client.get(MEMBERS).content.decode() + client.get(API_KEYS).content.decode()

    assert "member@acme.test" not in pages and "Acme key" not in pages
    assert role_of(member) == Role.MEMBER
    assert ApiKey.objects.get(pk=api_key.pk).revoked_at is None


def test_anonymous_visitors_are_sent_to_log_in(owner, member):
    api_key, _ = api_key_create(organization=owner.organization)

    for method, path in all_pages(member, api_key):
        response = getattr(Client(), method)(path)
        assert response.status_code == 302, path
        assert response["Location"].startswith("/accounts/login/?next="), path
    assert Membership.objects.filter(pk=member.pk).exists()


def test_the_sidebar_links_both_pages_for_admins_only(owner, member):
    admin_html = logged_in(owner).get(MEMBERS).content.decode()
    member_html = logged_in(member).get("/me/usage/").content.decode()

    assert f'<a href="{MEMBERS}" aria-current="page">Members</a>' in admin_html
    assert f'<a href="{API_KEYS}">API Keys</a>' in admin_html
    assert f'href="{MEMBERS}"' not in member_html and f'href="{API_KEYS}"' not in member_html


@pytest.mark.django_db(transaction=True)
def test_two_admins_stepping_down_at_once_leave_one_admin(organization):
    """The admins' rows are locked: the second change sees the first, and is refused."""
    first = AdminMembershipFactory(organization=organization)
    second = AdminMembershipFactory(organization=organization)

    def step_down(membership: Membership) -> str:
        try:
            membership_update(membership=membership, role=Role.MEMBER, keep_an_admin=True)
        except InvalidInput as error:
            return error.code
        return "done"

    answers = run_at_once(lambda: step_down(first), lambda: step_down(second))

    assert sorted(answers) == ["done", "last_admin"]
    assert Membership.objects.filter(organization=organization, role=Role.ADMIN).count() == 1
