"""Plans (SPEC §12): what an organization on a plan uses where it sets none
of its own, and where each value in force comes from.
"""

from __future__ import annotations

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from accounts.models import Organization, Plan
from accounts.plans import plan_create
from billing.models import UserLimitPolicy
from billing.rules import ORGANIZATION_CREDITS_EXHAUSTED, USER_LIMIT_REACHED
from tests.helpers import consume

pytestmark = pytest.mark.django_db

D = Decimal
ORGANIZATION = "/api/v1/organization"


@pytest.fixture
def team(db) -> Plan:
    return plan_create(
        key="team",
        name="Team",
        credit_allowance=D(1000),
        default_limit=D(50),
        credit_price=D("0.01"),
    )


def sources(body):
    return {
        name: (body[name], body[f"{name}_source"])
        for name in ("credit_allowance", "default_limit", "credit_price")
    }


class TestCommands:
    def test_create_plan(self):
        out = StringIO()
        call_command(
            "create_plan",
            "team",
            "--name",
            "Team",
            "--allowance",
            "1000",
            "--default-limit",
            "50",
            "--credit-price",
            "0.000001",
            stdout=out,
        )
        plan = Plan.objects.get()
        assert (plan.key, plan.name, plan.credit_allowance, plan.default_limit) == (
            "team",
            "Team",
            1000,
            50,
        )
        assert plan.credit_price == D("0.000001")
        assert "Created plan team (Team)" in out.getvalue()

    @pytest.mark.parametrize(
        "arguments",
        [
            ["bad key", "--name", "X"],
            ["team", "--name", " "],
            ["team", "--name", "X", "--allowance", "0"],
            ["team", "--name", "X", "--default-limit", "-1"],
            ["team", "--name", "X", "--credit-price", "0.0000001"],
        ],
    )
    def test_bad_input_stores_nothing(self, arguments):
        with pytest.raises(CommandError):
            call_command("create_plan", *arguments, stdout=StringIO())
        assert not Plan.objects.exists()

    def test_a_taken_key_is_refused(self, team):
        with pytest.raises(CommandError, match="already exists"):
            call_command("create_plan", "team", "--name", "Again", stdout=StringIO())
        assert Plan.objects.get().name == "Team"

    def test_create_org_on_a_plan(self, team):
        out = StringIO()
        call_command("create_org", "initech", "--name", "Initech", "--plan", "team", stdout=out)
        organization = Organization.objects.get(slug="initech")
        assert organization.plan == team
        assert organization.credit_allowance == 1000
        assert "on the plan team" in out.getvalue()

    def test_create_org_on_an_unknown_plan_stores_nothing(self):
        with pytest.raises(CommandError, match="No plan 'gold'"):
            call_command(
                "create_org", "initech", "--name", "I", "--plan", "gold", stdout=StringIO()
            )
        assert not Organization.objects.filter(slug="initech").exists()


class TestValuesInForce:
    def test_without_a_plan_the_organizations_own_or_none(self, api):
        assert sources(api.get(ORGANIZATION).json()) == {
            "credit_allowance": (None, None),
            "default_limit": (None, None),
            "credit_price": (None, None),
        }

    def test_on_a_plan_its_values_where_the_organization_sets_none(self, api, team):
        body = api.patch(ORGANIZATION, {"plan": "team"}).json()
        assert body["plan"] == "team"
        assert sources(body) == {
            "credit_allowance": ("1000", "plan"),
            "default_limit": ("50", "plan"),
            "credit_price": ("0.01", "plan"),
        }
        assert body["period_allowance"] == "1000"

    def test_its_own_value_wins_and_null_gives_the_plans_back(self, api, organization, team):
        api.patch(ORGANIZATION, {"plan": "team"})
        body = api.patch(ORGANIZATION, {"credit_allowance": 10, "credit_price": "0"}).json()
        assert sources(body)["credit_allowance"] == ("10", "organization")
        assert sources(body)["credit_price"] == ("0", "organization")
        body = api.patch(ORGANIZATION, {"credit_allowance": None}).json()
        assert sources(body)["credit_allowance"] == ("1000", "plan")
        organization.refresh_from_db()
        assert organization.own_credit_allowance is None

    def test_the_limits_policys_own_default_wins(self, api, organization, team):
        api.patch(ORGANIZATION, {"plan": "team"})
        api.put("/api/v1/user-limits", {"enabled": True, "default_limit": 7})
        assert sources(api.get(ORGANIZATION).json())["default_limit"] == ("7", "organization")

    def test_leaving_the_plan(self, api, team):
        api.patch(ORGANIZATION, {"plan": "team"})
        body = api.patch(ORGANIZATION, {"plan": None}).json()
        assert body["plan"] is None
        assert sources(body)["credit_allowance"] == (None, None)

    def test_an_unknown_plan_is_a_422_and_nothing_changes(self, api, organization):
        response = api.patch(ORGANIZATION, {"plan": "gold", "name": "Renamed"})
        assert response.status_code == 422
        assert response.json()["error"]["field"] == "plan"
        organization.refresh_from_db()
        assert (organization.plan, organization.name) == (None, "Acme Inc")


class TestTheGateUsesThem:
    def test_the_plans_allowance_caps_the_organization(self, organization, member, team):
        organization.plan = team
        organization.save()
        assert consume(organization, member, 40).allowed
        UserLimitPolicy.objects.create(organization=organization, enabled=False)
        refused = consume(organization, member, 961)
        assert (refused.allowed, refused.reason) == (False, ORGANIZATION_CREDITS_EXHAUSTED)

    def test_the_plans_default_limit_limits_members_without_a_policy(
        self, organization, member, team
    ):
        organization.plan = team
        organization.save()
        assert consume(organization, member, 50).allowed
        refused = consume(organization, member, D("0.000001"))
        assert (refused.allowed, refused.reason) == (False, USER_LIMIT_REACHED)

    def test_a_disabled_policy_of_its_own_turns_the_plans_limit_off(
        self, organization, member, team
    ):
        organization.plan = team
        organization.save()
        UserLimitPolicy.objects.create(organization=organization, enabled=False)
        assert consume(organization, member, 60).allowed


def test_the_pages_name_the_plan(owner, team):
    from tests.fixtures import logged_in

    organization = owner.organization
    organization.plan = team
    organization.save()
    client = logged_in(owner)
    limits = client.get("/settings/limits/").content.decode()
    assert "Team" in limits and "allowance from the plan" in limits
    assert "Plan: <strong>Team</strong>" in client.get("/usage/").content.decode()
