"""Plan alerts (SPEC §12): every organization on a plan inherits the plan's
alerts with no migration; each fires and is recorded per organization like
its own; an organization may change its copy (`plan_override`), turn it
off, never delete it; the plan's changes reach every copy not changed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
import time_machine
from django.core import mail
from django.core.management import CommandError, call_command

from accounts.models import Organization, Plan
from accounts.plans import plan_create
from alerts.models import Firing, OrganizationAlert, PlanAlert, PlanChange
from alerts.services.changes import organization_update, plan_update
from alerts.services.configuration import alert_create
from alerts.services.plan_alerts import (
    inherited_alert_reset,
    plan_alert_create,
    plan_alert_delete,
    plan_alert_update,
)
from alerts.services.plan_settling import plan_alert_settle, plans_settle_due
from billing.models import Meter
from config.errors import InvalidInput
from tests.factories import AdminMembershipFactory, OrganizationFactory
from tests.fixtures import ApiClient, run_in_threads
from tests.helpers import admin_url, ingest

pytestmark = pytest.mark.django_db

D = Decimal
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
ALERTS = "/api/v1/alerts"


@pytest.fixture(autouse=True)
def frozen_clock():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def team(db) -> Plan:
    return plan_create(key="team", name="Team", credit_allowance=D(1000))


@pytest.fixture
def free(db) -> Plan:
    return plan_create(key="free", name="Free", credit_allowance=D(100))


def on_plan(plan: Plan, count: int = 1) -> list[Organization]:
    organizations = []
    for _ in range(count):
        organization = OrganizationFactory()
        AdminMembershipFactory(organization=organization)
        organization_update(organization=organization, plan=plan)
        organizations.append(organization)
    return organizations


def copy_of(plan_alert: PlanAlert, organization: Organization) -> OrganizationAlert:
    return OrganizationAlert.objects.get(plan_alert=plan_alert, organization=organization)


def firings(organization: Organization) -> list[Firing]:
    return list(Firing.objects.filter(organization=organization, alert__isnull=False))


class TestInheritance:
    def test_every_organization_on_the_plan_has_the_alert_at_once(self, team, free):
        acme, globex = on_plan(team, 2)
        (elsewhere,) = on_plan(free)
        plan_alert = plan_alert_create(plan=team, threshold_type="percentage", threshold=D(80))
        assert {copy.organization for copy in plan_alert.copies.all()} == {acme, globex}
        assert not OrganizationAlert.objects.filter(organization=elsewhere).exists()
        assert copy_of(plan_alert, acme).source == "plan"

    def test_it_fires_per_organization_like_its_own_alerts(self, team, deliver):
        acme, globex = on_plan(team, 2)
        plan_alert = plan_alert_create(plan=team, threshold_type="percentage", threshold=D(80))
        ingest(acme, 700)
        deliver(ingest, acme, 200)  # crosses 800 credits: 80 % of the plan's allowance
        ingest(acme, 50)
        ingest(globex, 100)
        (firing,) = firings(acme)
        assert firing.alert == copy_of(plan_alert, acme)
        assert (firing.threshold, firing.threshold_credits, firing.value) == (80, 800, 900)
        assert firings(globex) == []
        assert len(mail.outbox) == 1
        assert mail.outbox[0].to == [acme.memberships.get().user.email]

    def test_it_is_listed_with_its_source_and_status(self, team):
        (acme,) = on_plan(team)
        plan_alert_create(plan=team, threshold_type="absolute", threshold=D(10))
        alert_create(organization=acme, threshold_type="absolute", threshold=D(5))
        ingest(acme, 12)
        body = ApiClient(_key(acme)).get(ALERTS).json()["data"]
        assert sorted((a["source"], a["threshold"], a["status"], a["enabled"]) for a in body) == [
            ("organization", "5", "in_alarm", True),
            ("plan", "10", "in_alarm", True),
        ]

    def test_a_new_plan_alert_already_passed_fires_at_once(self, team, deliver):
        acme, globex = on_plan(team, 2)
        ingest(acme, 500)
        ingest(globex, 5)
        deliver(plan_alert_create, plan=team, threshold_type="absolute", threshold=D(100))
        assert [f.value for f in firings(acme)] == [500]
        assert firings(globex) == []
        ingest(globex, 200)
        assert [f.value for f in firings(globex)] == [205]

    def test_only_future_leaves_the_organizations_already_past_quiet(self, team, deliver):
        acme, globex = on_plan(team, 2)
        ingest(acme, 500)
        plan_alert = deliver(
            plan_alert_create,
            plan=team,
            threshold_type="absolute",
            threshold=D(100),
            only_future=True,
        )
        ingest(acme, 100)
        ingest(globex, 150)
        assert firings(acme) == []
        assert [f.value for f in firings(globex)] == [150]
        copy = copy_of(plan_alert, acme)
        month_start = NOW.replace(day=1, hour=0)
        assert (copy.quiet_period_start, copy.only_future_pending) == (month_start, False)
        with time_machine.travel(NOW + timedelta(days=30), tick=False):
            ingest(acme, 150)  # a new period: it fires as usual
        assert len(firings(acme)) == 1

    def test_before_it_is_settled_only_future_fires_on_a_crossing_only(self, team):
        acme, globex = on_plan(team, 2)
        ingest(acme, 500)
        plan_alert = plan_alert_create(  # its settling task not run yet
            plan=team, threshold_type="absolute", threshold=D(100), only_future=True
        )
        # A change of configuration evaluates acme's alerts: not this one yet.
        alert_create(organization=acme, threshold_type="absolute", threshold=D(10_000))
        ingest(globex, 150)  # a crossing fires it
        assert firings(acme) == []
        assert len(firings(globex)) == 1
        plan_alert_settle(plan_alert.pk)
        assert copy_of(plan_alert, acme).quiet_period_start is not None
        assert firings(acme) == []

    def test_settling_twice_fires_once(self, team):
        (acme,) = on_plan(team)
        ingest(acme, 500)
        plan_alert = plan_alert_create(plan=team, threshold_type="absolute", threshold=D(100))
        plan_alert_settle(plan_alert.pk)
        PlanAlert.objects.filter(pk=plan_alert.pk).update(settled_revision=0)
        plan_alert_settle(plan_alert.pk)
        assert len(firings(acme)) == 1

    def test_the_beat_settles_what_a_lost_task_left(self, team):
        (acme,) = on_plan(team)
        ingest(acme, 500)
        plan_alert = plan_alert_create(plan=team, threshold_type="absolute", threshold=D(100))
        assert firings(acme) == []  # its task never ran (no commit in this test)
        assert plans_settle_due() == 1
        assert len(firings(acme)) == 1
        assert PlanAlert.objects.get(pk=plan_alert.pk).settled_revision == 1
        assert plans_settle_due() == 0

    def test_an_organization_joining_the_plan_gets_its_alerts(self, team):
        plan_alert = plan_alert_create(plan=team, threshold_type="absolute", threshold=D(100))
        out = StringIO()
        call_command("create_org", "newco", "--name", "NewCo", "--plan", "team", stdout=out)
        newco = Organization.objects.get(slug="newco")
        assert copy_of(plan_alert, newco).source == "plan"


class TestOrganizationsCopy:
    def test_patch_changes_this_organizations_copy_only(self, team):
        acme, globex = on_plan(team, 2)
        plan_alert = plan_alert_create(plan=team, threshold_type="absolute", threshold=D(100))
        copy = copy_of(plan_alert, acme)
        response = ApiClient(_key(acme)).patch(f"{ALERTS}/{copy.pk}", {"threshold": "300"})
        assert response.status_code == 200, response.content
        assert (response.json()["source"], response.json()["threshold"]) == ("plan_override", "300")
        assert copy_of(plan_alert, globex).threshold == 100
        plan_alert_update(plan_alert=plan_alert, threshold=D(200))
        assert copy_of(plan_alert, acme).threshold == 300  # changed here: the plan's edit passes by
        assert copy_of(plan_alert, globex).threshold == 200

    def test_turned_off_here_it_never_fires(self, team):
        (acme,) = on_plan(team)
        plan_alert = plan_alert_create(plan=team, threshold_type="absolute", threshold=D(100))
        copy = copy_of(plan_alert, acme)
        response = ApiClient(_key(acme)).patch(f"{ALERTS}/{copy.pk}", {"enabled": False})
        assert (response.json()["enabled"], response.json()["source"]) == (False, "plan_override")
        ingest(acme, 500)
        assert firings(acme) == []
        plan_alert_update(plan_alert=plan_alert, threshold=D(50))
        assert copy_of(plan_alert, acme).enabled is False

    def test_turned_on_again_it_fires_if_already_past(self, team):
        (acme,) = on_plan(team)
        plan_alert = plan_alert_create(plan=team, threshold_type="absolute", threshold=D(100))
        api = ApiClient(_key(acme))
        copy = copy_of(plan_alert, acme)
        api.patch(f"{ALERTS}/{copy.pk}", {"enabled": False})
        ingest(acme, 500)
        api.patch(f"{ALERTS}/{copy.pk}", {"enabled": True})
        assert len(firings(acme)) == 1

    def test_delete_is_409_inherited_alert_and_keeps_it(self, team):
        (acme,) = on_plan(team)
        plan_alert = plan_alert_create(plan=team, threshold_type="absolute", threshold=D(100))
        copy = copy_of(plan_alert, acme)
        response = ApiClient(_key(acme)).delete(f"{ALERTS}/{copy.pk}")
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "inherited_alert"
        assert OrganizationAlert.objects.filter(pk=copy.pk).exists()

    def test_reset_takes_the_plans_alert_again_and_follows_it(self, team):
        (acme,) = on_plan(team)
        plan_alert = plan_alert_create(plan=team, threshold_type="absolute", threshold=D(100))
        copy = copy_of(plan_alert, acme)
        ApiClient(_key(acme)).patch(f"{ALERTS}/{copy.pk}", {"threshold": "300", "enabled": False})
        ingest(acme, 150)
        inherited_alert_reset(alert=copy)
        copy.refresh_from_db()
        assert (copy.source, copy.threshold, copy.enabled) == ("plan", 100, True)
        assert len(firings(acme)) == 1  # re-armed at 100, already past: fires at once
        plan_alert_update(plan_alert=plan_alert, threshold=D(120))
        assert copy_of(plan_alert, acme).threshold == 120

    def test_another_organization_never_sees_nor_changes_the_copy(self, team):
        acme, globex = on_plan(team, 2)
        plan_alert = plan_alert_create(plan=team, threshold_type="absolute", threshold=D(100))
        theirs = copy_of(plan_alert, globex)
        api = ApiClient(_key(acme))
        assert theirs.pk not in [a["id"] for a in api.get(ALERTS).json()["data"]]
        for response in (
            api.get(f"{ALERTS}/{theirs.pk}"),
            api.patch(f"{ALERTS}/{theirs.pk}", {"threshold": "1"}),
            api.delete(f"{ALERTS}/{theirs.pk}"),
        ):
            assert response.status_code == 404
        assert copy_of(plan_alert, globex).threshold == 100


def test_an_organization_never_changes_the_plan_itself(team, free):
    acme, globex = on_plan(team, 2)
    plan_alert = plan_alert_create(plan=team, threshold_type="absolute", threshold=D(100))
    api = ApiClient(_key(acme))
    response = api.patch("/api/v1/organization", {"credit_allowance": "5", "credit_price": "1"})
    assert response.status_code == 200
    assert response.json()["credit_allowance_source"] == "organization"
    api.patch(f"{ALERTS}/{copy_of(plan_alert, acme).pk}", {"threshold": "7", "enabled": False})
    api.patch("/api/v1/organization", {"plan": "free"})
    team.refresh_from_db()
    plan_alert.refresh_from_db()
    assert (team.credit_allowance, team.credit_price) == (1000, None)
    assert (plan_alert.threshold, plan_alert.enabled) == (100, True)
    assert (copy_of(plan_alert, globex).threshold, copy_of(plan_alert, globex).enabled) == (
        100,
        True,
    )


class TestPlanChanges:
    def test_a_plan_edit_reaches_every_copy_and_re_arms_it(self, team, deliver):
        acme, globex = on_plan(team, 2)
        plan_alert = plan_alert_create(plan=team, threshold_type="absolute", threshold=D(100))
        ingest(acme, 150)
        ingest(globex, 60)
        assert len(firings(acme)) == 1
        deliver(plan_alert_update, plan_alert=plan_alert, threshold=D(50))
        # Re-armed: both past 50 now fire, acme a second time this period.
        assert len(firings(acme)) == 2
        assert [f.value for f in firings(globex)] == [60]

    def test_disabling_on_the_plan_turns_every_copy_off(self, team):
        (acme,) = on_plan(team)
        plan_alert = plan_alert_create(plan=team, threshold_type="absolute", threshold=D(100))
        plan_alert_update(plan_alert=plan_alert, enabled=False)
        assert copy_of(plan_alert, acme).enabled is False
        ingest(acme, 500)
        assert firings(acme) == []

    def test_deleting_it_from_the_plan_keeps_the_history(self, team):
        (acme,) = on_plan(team)
        plan_alert = plan_alert_create(plan=team, threshold_type="absolute", threshold=D(100))
        ingest(acme, 500)
        plan_alert_delete(plan_alert=plan_alert)
        assert not OrganizationAlert.objects.filter(organization=acme).exists()
        assert Firing.objects.filter(organization=acme).count() == 1

    def test_moving_to_another_plan_swaps_the_inherited_alerts(self, team, free):
        (acme,) = on_plan(team)
        on_team = plan_alert_create(plan=team, threshold_type="absolute", threshold=D(100))
        on_free = plan_alert_create(plan=free, threshold_type="absolute", threshold=D(50))
        own = alert_create(organization=acme, threshold_type="absolute", threshold=D(5000))
        ApiClient(_key(acme)).patch(f"{ALERTS}/{copy_of(on_team, acme).pk}", {"threshold": "9"})
        ingest(acme, 70)
        response = ApiClient(_key(acme)).patch("/api/v1/organization", {"plan": "free"})
        assert response.status_code == 200, response.content
        alerts = OrganizationAlert.objects.filter(organization=acme)
        assert {(a.plan_alert_id, a.source) for a in alerts} == {
            (None, "organization"),
            (on_free.pk, "plan"),
        }
        assert own.pk in {a.pk for a in alerts}
        # Re-evaluated at once: 70 is past the new plan's 50.
        assert [f.alert.plan_alert_id for f in firings(acme)] == [on_free.pk]

    def test_leaving_the_plan_drops_its_alerts(self, team):
        (acme,) = on_plan(team)
        plan_alert_create(plan=team, threshold_type="absolute", threshold=D(100))
        organization_update(organization=acme, clear_plan=True)
        assert not OrganizationAlert.objects.filter(organization=acme).exists()


class TestLimit:
    def test_inherited_alerts_count_toward_the_organizations_25(self, team):
        (acme,) = on_plan(team)
        plan_alert_create(plan=team, threshold_type="absolute", threshold=D(1))
        for n in range(24):
            alert_create(organization=acme, threshold_type="absolute", threshold=D(10 + n))
        with pytest.raises(InvalidInput) as refused:
            alert_create(organization=acme, threshold_type="absolute", threshold=D(99))
        assert refused.value.code == "too_many_alerts"

    def test_a_plan_alert_is_refused_where_an_organization_has_25(self, team):
        acme, globex = on_plan(team, 2)
        for n in range(25):
            alert_create(organization=acme, threshold_type="absolute", threshold=D(10 + n))
        with pytest.raises(InvalidInput) as refused:
            plan_alert_create(plan=team, threshold_type="absolute", threshold=D(1))
        assert refused.value.code == "too_many_alerts"
        assert acme.slug in refused.value.message
        assert not PlanAlert.objects.exists()
        assert not OrganizationAlert.objects.filter(organization=globex).exists()

    def test_the_limit_is_per_meter(self, team):
        storage = Meter.objects.create(key="storage", name="Storage", unit="GB", aggregation="sum")
        (acme,) = on_plan(team)
        for n in range(25):
            alert_create(organization=acme, threshold_type="absolute", threshold=D(10 + n))
        plan_alert = plan_alert_create(
            plan=team, threshold_type="absolute", threshold=D(100), meter=storage
        )
        assert copy_of(plan_alert, acme).meter == storage

    def test_moving_to_a_plan_is_refused_past_25(self, team, free):
        (acme,) = on_plan(free)
        plan_alert_create(plan=team, threshold_type="absolute", threshold=D(1))
        for n in range(25):
            alert_create(organization=acme, threshold_type="absolute", threshold=D(10 + n))
        response = ApiClient(_key(acme)).patch("/api/v1/organization", {"plan": "team"})
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "too_many_alerts"
        acme.refresh_from_db()
        assert acme.plan == free


class TestCommand:
    def test_add_plan_alert(self, team):
        on_plan(team, 3)
        out = StringIO()
        call_command(
            "add_plan_alert", "team", "--type", "percentage", "--threshold", "80", stdout=out
        )
        assert "to 3 organizations on the plan." in out.getvalue()
        plan_alert = PlanAlert.objects.get()
        assert (plan_alert.threshold_type, plan_alert.threshold, plan_alert.only_future) == (
            "percentage",
            80,
            False,
        )
        assert plan_alert.copies.count() == 3

    def test_only_future_and_a_meter(self, team):
        Meter.objects.create(key="storage", name="Storage", unit="GB", aggregation="sum")
        out = StringIO()
        call_command(
            "add_plan_alert",
            "team",
            "--type",
            "absolute",
            "--threshold",
            "100",
            "--meter",
            "storage",
            "--only-future",
            stdout=out,
        )
        assert "only for future crossings" in out.getvalue()
        assert PlanAlert.objects.get().meter.key == "storage"

    @pytest.mark.parametrize(
        ("arguments", "message"),
        [
            (["nope", "--type", "absolute", "--threshold", "1"], "No plan 'nope'"),
            (["team", "--type", "absolute", "--threshold", "1", "--meter", "x"], "No meter 'x'"),
            (["team", "--type", "percentage", "--threshold", "150"], "between 1 and 100"),
        ],
    )
    def test_refusals_store_nothing(self, team, arguments, message):
        with pytest.raises(CommandError, match=message):
            call_command("add_plan_alert", *arguments, stdout=StringIO())
        assert not PlanAlert.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_twenty_organizations_crossing_at_once_fire_once_each(team):
    organizations = on_plan(team, 20)
    plan_alert = plan_alert_create(plan=team, threshold_type="absolute", threshold=D(100))

    def cross(index: int) -> None:
        organization = Organization.objects.get(pk=organizations[index % 20].pk)
        ingest(organization, 60, key=f"k{index}")

    run_in_threads(40, cross)  # two writes each, each write crossing on its own or not
    for organization in organizations:
        (firing,) = firings(organization)
        assert firing.alert == copy_of(plan_alert, organization)
    assert Firing.objects.count() == 20


def _key(organization: Organization) -> str:
    from accounts.services import api_key_create

    return api_key_create(organization=organization)[1]


class TestPlanValues:
    """A change of the plan's own values reaches the organizations using
    them: their alerts are evaluated as if each had changed its own.
    """

    def test_a_lower_allowance_fires_the_percentage_alerts_now_passed(self, team, deliver):
        acme, globex = on_plan(team, 2)
        plan_alert_create(plan=team, threshold_type="percentage", threshold=D(80))
        organization_update(organization=globex, credit_allowance=D(10_000))  # its own
        ingest(acme, 500)
        ingest(globex, 500)
        deliver(plan_update, plan=team, credit_allowance=D(600))  # 80 %: 480 credits
        assert [f.threshold_credits for f in firings(acme)] == [480]
        assert firings(globex) == []

    def test_the_beat_settles_a_change_whose_task_was_lost(self, team):
        (acme,) = on_plan(team)
        alert_create(organization=acme, threshold_type="percentage", threshold=D(50))
        ingest(acme, 400)
        plan_update(plan=team, credit_allowance=D(700))  # its task never ran
        assert firings(acme) == []
        assert plans_settle_due() == 1
        assert len(firings(acme)) == 1
        assert PlanChange.objects.get().settled_at is not None
        assert plans_settle_due() == 0

    def test_a_name_alone_settles_nothing(self, team):
        on_plan(team)
        plan_update(plan=team, name="Team plan")
        assert not PlanChange.objects.exists()

    def test_bad_values_store_nothing(self, team):
        with pytest.raises(InvalidInput):
            plan_update(plan=team, credit_allowance=D(0))
        team.refresh_from_db()
        assert team.credit_allowance == 1000
        assert not PlanChange.objects.exists()


class TestAdmin:
    def test_a_plan_alert_added_on_the_plans_page_reaches_its_organizations(
        self, team, staff_client
    ):
        acme, globex = on_plan(team, 2)
        response = staff_client.post(
            admin_url(Plan, "change", team.pk),
            plan_form(team, alerts=[{"threshold_type": "absolute", "threshold": "100"}]),
        )
        assert response.status_code == 302, response.content.decode()[:3000]
        plan_alert = PlanAlert.objects.get()
        assert {copy.organization for copy in plan_alert.copies.all()} == {acme, globex}

    def test_an_organization_full_of_alerts_refuses_it_on_the_page(self, team, staff_client):
        (acme,) = on_plan(team)
        for n in range(25):
            alert_create(organization=acme, threshold_type="absolute", threshold=D(10 + n))
        response = staff_client.post(
            admin_url(Plan, "change", team.pk),
            plan_form(team, alerts=[{"threshold_type": "absolute", "threshold": "100"}]),
        )
        assert response.status_code == 200
        assert "already have 25 alerts" in response.content.decode()
        assert not PlanAlert.objects.exists()

    def test_a_new_allowance_on_the_page_goes_through_the_service(self, team, staff_client):
        on_plan(team)
        response = staff_client.post(
            admin_url(Plan, "change", team.pk), plan_form(team, credit_allowance="500")
        )
        assert response.status_code == 302
        assert PlanChange.objects.get().fields == ["credit_allowance"]

    def test_an_inherited_alert_cannot_be_deleted_in_the_organizations_admin(
        self, team, staff_client
    ):
        (acme,) = on_plan(team)
        plan_alert = plan_alert_create(plan=team, threshold_type="absolute", threshold=D(100))
        copy = copy_of(plan_alert, acme)
        response = staff_client.post(
            admin_url(OrganizationAlert, "delete", copy.pk), {"post": "yes"}
        )
        assert response.status_code == 403
        assert OrganizationAlert.objects.filter(pk=copy.pk).exists()


def plan_form(plan: Plan, *, alerts=(), **values) -> dict[str, str]:
    data = {
        "name": plan.name,
        "credit_allowance": str(plan.credit_allowance or ""),
        "default_limit": str(plan.default_limit or ""),
        "credit_price": str(plan.credit_price or ""),
        "alerts-TOTAL_FORMS": str(len(alerts)),
        "alerts-INITIAL_FORMS": "0",
        "alerts-MIN_NUM_FORMS": "0",
        "alerts-MAX_NUM_FORMS": "1000",
    }
    data |= {key: str(value) for key, value in values.items()}
    for index, alert in enumerate(alerts):
        data |= {f"alerts-{index}-{key}": value for key, value in alert.items()}
        data[f"alerts-{index}-enabled"] = "on"
    return data
