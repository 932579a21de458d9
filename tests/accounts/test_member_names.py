"""A member's name set by one organization never shows in another (SPEC §16).

Sam belongs to Acme (as an admin) and to Globex. Acme renames them; Globex,
over the API and on its pages, still shows the name Sam had.
"""

from __future__ import annotations

from decimal import Decimal as D
from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse

from accounts.models import Membership, Organization, Role, User
from accounts.services import membership_create
from alerts.services.ingest import UsageInput, usage_ingest
from tests.factories import MembershipFactory, OrganizationFactory, UserFactory
from tests.fixtures import ApiClient, logged_in

pytestmark = pytest.mark.django_db

SAM = "sam@shared.test"
RENAMED = "Samantha at Acme"


@pytest.fixture
def sam(organization: Organization, other_organization: Organization) -> User:
    user = UserFactory(email=SAM, name="Sam Shared")
    MembershipFactory(organization=organization, user=user, role=Role.ADMIN, external_id="sam")
    MembershipFactory(
        organization=other_organization, user=user, role=Role.ADMIN, external_id="sam-g"
    )
    for org, external_id in ((organization, "sam"), (other_organization, "sam-g")):
        usage_ingest(organization=org, events=[UsageInput("seed", D(5), user=external_id)])
    return user


@pytest.fixture
def renamed(sam: User, api: ApiClient) -> None:
    response = api.patch("/api/v1/members/sam", {"name": RENAMED})
    assert response.status_code == 200, response.content
    assert response.json()["name"] == RENAMED


def names_in(api: ApiClient) -> dict[str, str]:
    members = api.get("/api/v1/members").json()["data"]
    return {member["user"]: member["name"] for member in members}


def test_the_api_shows_the_name_only_in_the_organization_that_set_it(renamed, api, outsider_api):
    assert api.get("/api/v1/members/sam").json()["name"] == RENAMED
    assert names_in(api)["sam"] == RENAMED

    assert outsider_api.get("/api/v1/members/sam-g").json()["name"] == "Sam Shared"
    assert names_in(outsider_api)["sam-g"] == "Sam Shared"
    assert User.objects.get(email=SAM).name == "Sam Shared"


def test_the_pages_show_the_name_only_in_the_organization_that_set_it(
    renamed, organization, other_organization, owner, outsider
):
    acme, globex = logged_in(owner), logged_in(outsider)

    # Usage monitor, top users.
    assert RENAMED in acme.get("/usage/").content.decode()
    globex_usage = globex.get("/usage/").content.decode()
    assert "Sam Shared" in globex_usage and RENAMED not in globex_usage
    # Member pickers: shown and found by the organization's own name.
    assert RENAMED in acme.get("/members/search/?q=Samantha").content.decode()
    assert "Sam Shared" not in globex.get("/members/search/?q=Samantha").content.decode()
    globex_search = globex.get("/members/search/?q=sam").content.decode()
    assert "Sam Shared" in globex_search and RENAMED not in globex_search
    # The name at the top of every page, for Sam as they work in each.
    sam = logged_in(User.objects.get(email=SAM))
    sam.post(reverse("switch_organization"), {"organization": organization.pk})
    assert RENAMED in sam.get("/usage/").content.decode()
    sam.post(reverse("switch_organization"), {"organization": other_organization.pk})
    assert RENAMED not in sam.get("/usage/").content.decode()


def test_the_blocked_notice_names_admins_as_the_organization_does(renamed, organization, member):
    organization.credit_allowance = D(5)
    organization.save(update_fields=["own_credit_allowance"])

    notice = logged_in(member).get("/me/usage/")

    assert RENAMED in [admin.member_name for admin in notice.context["admins"]]
    text = notice.content.decode()
    assert f'<span class="contact-name">{RENAMED}</span>' in text
    assert "Sam Shared" not in text


def test_the_django_admin_shows_and_edits_the_organizations_name(
    renamed, staff_client, other_organization
):
    changelist = staff_client.get(reverse("admin:accounts_membership_changelist"))
    shown = {(m.organization.slug, m.member_name) for m in changelist.context["cl"].result_list}
    assert {("acme", RENAMED), (other_organization.slug, "Sam Shared")} <= shown

    globex_sam = Membership.objects.get(external_id="sam-g")
    form = staff_client.get(reverse("admin:accounts_membership_change", args=[globex_sam.pk]))
    assert 'name="name"' in form.content.decode()


def test_an_empty_name_falls_back_to_the_users_own(renamed, api):
    response = api.patch("/api/v1/members/sam", {"name": ""})

    assert response.json()["name"] == "Sam Shared"


def test_adding_an_existing_user_with_a_name_names_them_there_only(sam, organization):
    third = OrganizationFactory(slug="initech", name="Initech")

    membership = membership_create(organization=third, email=SAM, name="S. at Initech")

    assert membership.member_name == "S. at Initech"
    assert User.objects.get(email=SAM).name == "Sam Shared"
    assert Membership.objects.get(organization=organization, user__email=SAM).member_name == (
        "Sam Shared"
    )


def test_add_member_names_the_member_and_a_new_user(sam, organization):
    third = OrganizationFactory(slug="initech", name="Initech")

    call_command(
        "add_member", "acme", "new@acme.test", "--role=member", "--name=Newt", stdout=StringIO()
    )
    call_command("add_member", "initech", SAM, "--role=member", "--name=Sammy", stdout=StringIO())

    new = Membership.objects.get(organization=organization, user__email="new@acme.test")
    assert (new.name, new.user.name) == ("Newt", "Newt")
    assert Membership.objects.get(organization=third, user__email=SAM).member_name == "Sammy"
    assert User.objects.get(email=SAM).name == "Sam Shared"
    assert Membership.objects.get(organization=organization, user__email=SAM).member_name == (
        "Sam Shared"
    )
