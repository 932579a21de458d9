"""Where a log-in lands (issue 13, item 5): platform staff who belong to no
organization go to the Django admin; anyone else without an organization is
told to ask an admin; staff who are members land on their organization's page.
"""

from __future__ import annotations

import pytest
from django.test import Client

from accounts.models import Membership, User
from tests.fixtures import logged_in


@pytest.mark.django_db
def test_staff_without_an_organization_logging_in_land_in_the_django_admin() -> None:
    User.objects.create_superuser("ops@headroom.test", "an-ops-password")
    client = Client()

    response = client.post(
        "/accounts/login/",
        {"email": "ops@headroom.test", "password": "an-ops-password"},
        follow=True,
    )

    assert response.redirect_chain[-1] == ("/admin/", 302)
    assert response.status_code == 200
    assert "Headroom administration" in response.content.decode()  # the admin's header


@pytest.mark.django_db
def test_staff_without_an_organization_at_home_go_to_the_django_admin(staff_client: Client) -> None:
    response = staff_client.get("/")

    assert (response.status_code, response["Location"]) == (302, "/admin/")


@pytest.mark.django_db
def test_a_user_without_an_organization_who_is_not_staff_is_told_to_ask_an_admin() -> None:
    user = User.objects.create_user("nobody@headroom.test", "a-password-123")

    response = logged_in(user).get("/")

    assert response.status_code == 403
    assert "Ask an admin of your organization" in response.content.decode()


@pytest.mark.django_db
def test_staff_who_are_members_land_on_their_organization_page(owner: Membership) -> None:
    owner.user.is_staff = True
    owner.user.save()

    response = logged_in(owner).get("/")

    assert (response.status_code, response["Location"]) == (302, "/settings/limits/")
