from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts.models import Organization
from accounts.web import ADMIN_REQUIRED_MESSAGE, SESSION_ORGANIZATION_KEY
from tests.factories import DEFAULT_PASSWORD, MembershipFactory, UserFactory
from tests.fixtures import logged_in
from tests.helpers import assert_shows, page_html

ADMIN_PAGES = ["/settings/limits/", "/usage/"]


# Log in and log out


def test_login_page_has_labelled_fields(db):
    response = Client().get("/accounts/login/")

    assert response.status_code == 200
    html = response.content.decode()
    assert '<label for="id_email">Email</label>' in html
    assert '<label for="id_password">Password</label>' in html
    assert "Log in" in html


def test_login_with_good_credentials_goes_home(owner):
    client = Client()

    response = client.post(
        "/accounts/login/", {"email": "Owner@Acme.test", "password": DEFAULT_PASSWORD}
    )

    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.get("/").url == "/settings/limits/"


def test_login_with_bad_credentials_shows_an_error(owner):
    client = Client()

    response = client.post(
        "/accounts/login/", {"email": "owner@acme.test", "password": "wrong password"}
    )

    assert response.status_code == 200
    assert "do not match an account" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_login_follows_a_local_next(owner):
    response = Client().post(
        "/accounts/login/",
        {"email": "owner@acme.test", "password": DEFAULT_PASSWORD, "next": "/usage/"},
    )

    assert response["Location"] == "/usage/"


def test_login_ignores_a_foreign_next(owner):
    response = Client().post(
        "/accounts/login/",
        {"email": "owner@acme.test", "password": DEFAULT_PASSWORD, "next": "https://evil.test/"},
    )

    assert response["Location"] == "/"


def test_logout_needs_a_post(owner):
    client = logged_in(owner)

    assert client.get("/accounts/logout/").status_code == 405
    response = client.post("/accounts/logout/")

    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/"
    assert "_auth_user_id" not in client.session


# Home and landing pages


def test_home_sends_an_admin_to_limits(owner):
    response = logged_in(owner).get("/")

    assert response.status_code == 302
    assert response["Location"] == "/settings/limits/"


def test_home_sends_a_member_to_their_usage(member):
    client = logged_in(member)

    response = client.get("/")

    assert response.status_code == 302
    assert response["Location"] == "/me/usage/"
    html = client.get(response["Location"]).content.decode()
    assert "Acme Inc" in html
    assert "Member" in html


def test_a_user_without_membership_is_told_so(db):
    client = Client()
    client.force_login(UserFactory())

    response = client.get("/")

    assert response.status_code == 403
    assert "You are not a member of any organization" in response.content.decode()


@pytest.mark.parametrize("path", ["/", *ADMIN_PAGES])
def test_anonymous_visitors_are_sent_to_login(db, path):
    response = Client().get(path)

    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={path}"


def test_anonymous_htmx_requests_redirect_the_whole_page(db):
    response = Client().get("/settings/limits/", headers={"HX-Request": "true"})

    assert response.headers["HX-Redirect"] == "/accounts/login/?next=/settings/limits/"


# Admins only


@pytest.mark.parametrize("path", ADMIN_PAGES)
def test_members_get_403_on_admin_pages(member, path):
    response = logged_in(member).get(path)

    assert response.status_code == 403
    assert "Only Admins can configure credit alerts and limits." in response.content.decode()
    assert ADMIN_REQUIRED_MESSAGE == "Only Admins can configure credit alerts and limits."


@pytest.mark.parametrize(
    ("path", "allowance", "shown"),
    [
        (
            "/settings/limits/",
            "2500",
            ("Limits &amp; Alerts", "Acme Inc", "2,500", "Credit-consuming actions are blocked"),
        ),
        ("/usage/", "1234.5", ("Monitor usage", "1,234.5")),
    ],
)
def test_the_page_shows_the_allowance(owner, organization, path, allowance, shown):
    organization.credit_allowance = Decimal(allowance)
    organization.save()

    html = page_html(owner, path)
    for text in shown:
        assert text in html


def test_limits_page_without_allowance_says_so(owner):
    html = logged_in(owner).get("/settings/limits/").content.decode()

    assert "No allowance set" in html


def test_sidebar_has_the_usage_section(owner):
    html = logged_in(owner).get("/settings/limits/").content.decode()

    assert_shows(
        html,
        "Organization Settings",
        ">Usage<",
        '<a href="/settings/limits/" aria-current="page">Limits &amp; Alerts</a>',
        '<a href="/usage/">Monitor usage</a>',
    )


def test_pages_load_htmx_from_static_and_send_the_csrf_token(owner):
    html = logged_in(owner).get("/settings/limits/").content.decode()

    assert '<script src="/static/js/htmx.min.js" defer></script>' in html
    assert 'hx-headers=\'{"X-CSRFToken": "' in html


def test_the_layout_costs_three_queries(owner, django_assert_num_queries):
    client = logged_in(owner)
    client.get("/")  # the first visit stores the organization in the session

    # session, user, memberships (with their organizations); then the redirect
    with django_assert_num_queries(3):
        response = client.get("/")

    assert response.status_code == 302


def test_query_count_does_not_grow_with_memberships(owner):
    client = logged_in(owner)
    client.get("/settings/limits/")
    with CaptureQueriesContext(connection) as one_membership:
        client.get("/settings/limits/")
    for _ in range(5):
        MembershipFactory(user=owner.user)

    with CaptureQueriesContext(connection) as six_memberships:
        client.get("/settings/limits/")

    assert len(six_memberships) == len(one_membership)


# Organization switcher


def test_switcher_is_shown_only_with_several_organizations(owner, other_organization):
    client = logged_in(owner)
    assert 'name="organization"' not in client.get("/settings/limits/").content.decode()

    MembershipFactory(organization=other_organization, user=owner.user)

    html = client.get("/settings/limits/").content.decode()
    assert '<select id="organization-switcher" name="organization">' in html
    assert "Globex" in html


def test_the_first_membership_is_the_default(owner, other_organization):
    MembershipFactory(organization=other_organization, user=owner.user)
    client = logged_in(owner)

    client.get("/")

    # Memberships are ordered by organization name: Acme Inc before Globex.
    assert client.session[SESSION_ORGANIZATION_KEY] == owner.organization_id


def test_switching_to_an_own_organization(owner, other_organization: Organization):
    MembershipFactory(organization=other_organization, user=owner.user)
    client = logged_in(owner)

    response = client.post(
        "/accounts/switch-organization/", {"organization": other_organization.pk}
    )

    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.session[SESSION_ORGANIZATION_KEY] == other_organization.pk
    # A member of Globex: no admin pages there.
    assert client.get("/settings/limits/").status_code == 403
    assert "Globex" in client.get("/", follow=True).content.decode()


def test_switching_with_htmx_redirects_the_whole_page(owner, other_organization):
    MembershipFactory(organization=other_organization, user=owner.user)

    response = logged_in(owner).post(
        "/accounts/switch-organization/",
        {"organization": other_organization.pk},
        headers={"HX-Request": "true"},
    )

    assert response.headers["HX-Redirect"] == "/"


def test_switching_to_a_foreign_organization_is_404(owner, outsider, other_organization):
    client = logged_in(owner)

    response = client.post(
        "/accounts/switch-organization/", {"organization": other_organization.pk}
    )

    assert response.status_code == 404
    assert client.session.get(SESSION_ORGANIZATION_KEY) != other_organization.pk


def test_switching_needs_a_post(owner):
    assert logged_in(owner).get("/accounts/switch-organization/").status_code == 405


def test_leaving_the_chosen_organization_falls_back(owner, other_organization):
    extra = MembershipFactory(organization=other_organization, user=owner.user)
    client = logged_in(owner)
    client.post("/accounts/switch-organization/", {"organization": other_organization.pk})

    extra.delete()

    assert client.get("/").url == "/settings/limits/"
    assert client.session[SESSION_ORGANIZATION_KEY] == owner.organization_id


def test_members_see_only_their_own_pages_in_the_sidebar(member):
    html = logged_in(member).get("/me/usage/").content.decode()

    assert '<a href="/me/usage/" aria-current="page">My usage</a>' in html
    assert 'href="/settings/limits/"' not in html
    assert 'href="/usage/"' not in html
