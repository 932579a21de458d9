"""Platform alerts (SPEC §12): the operator's own alerts across customers.
Each fires once per organization per period, in the transaction of the
write that crossed it, for organizations in its scope; it emails its
addresses and posts a signed `platform_alert.triggered` to its URLs. A new
or changed one fires off the request for organizations already past it.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine
from django.core import mail
from django.db import connection, transaction
from django.db.models import ProtectedError
from django.test.utils import CaptureQueriesContext
from standardwebhooks.webhooks import Webhook

from accounts.models import Organization, Plan
from accounts.plans import plan_create
from alerts.models import Channel, Notification
from alerts.outbox import notification_deliver
from alerts.platform_models import PlatformAlert, PlatformFiring
from alerts.selectors import webhook_deliveries_recent
from alerts.services.changes import organization_update
from alerts.services.platform_config import (
    _past_it,
    platform_alert_save,
    platform_alert_settle,
    platform_alerts_settle_due,
)
from alerts.services.rules import _alert_configuration, alerts_evaluate_organization
from alerts.webhooks import webhook_secret_generate
from tests.factories import AdminMembershipFactory, OrganizationFactory
from tests.fixtures import run_at_once, run_in_threads
from tests.helpers import consume, credit_grant, ingest
from tests.stubs import webhook_receiver

pytestmark = pytest.mark.django_db

D = Decimal
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
NEXT_PERIOD = datetime(2026, 4, 2, 12, 0, tzinfo=UTC)
SALES = "sales@headroom.example"


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


def platform_alert(
    threshold_type: str = "percentage",
    threshold: Decimal | int | None = 80,
    *,
    plan: Plan | None = None,
    emails: list[str] | None = None,
    urls: list[str] | None = None,
    name: str = "Outgrowing its plan",
) -> PlatformAlert:
    return platform_alert_save(
        alert=PlatformAlert(
            name=name,
            plan=plan,
            threshold_type=threshold_type,
            threshold=None if threshold is None else D(threshold),
            emails=[SALES] if emails is None else emails,
            webhook_urls=urls or [],
        )
    )


def organization_with(allowance: int | None = 1000, plan: Plan | None = None) -> Organization:
    organization = OrganizationFactory()
    AdminMembershipFactory(organization=organization)
    changes = {"plan": plan} if plan is not None else {}
    if allowance is not None:
        changes["credit_allowance"] = D(allowance)
    if changes:
        organization_update(organization=organization, **changes)
    return Organization.objects.get(pk=organization.pk)


def firings(alert: PlatformAlert, organization: Organization | None = None) -> list[PlatformFiring]:
    found = PlatformFiring.objects.filter(platform_alert=alert).order_by("id")
    if organization is not None:
        found = found.filter(organization=organization)
    return list(found)


class TestOncePerOrganizationPerPeriod:
    def test_fires_the_first_time_usage_reaches_it(self, deliver):
        organization = organization_with(1000)
        alert = platform_alert("percentage", 80)
        deliver(ingest, organization, 799)
        assert firings(alert) == []

        deliver(ingest, organization, 1)  # 800: 80 % of 1,000

        (firing,) = firings(alert)
        assert (firing.organization, firing.value, firing.allowance) == (
            organization,
            D(800),
            D(1000),
        )
        assert (firing.threshold_type, firing.threshold) == ("percentage", D(80))
        assert firing.period_start == datetime(2026, 3, 1, tzinfo=UTC)
        assert [message.to for message in mail.outbox] == [[SALES]]

    def test_a_second_write_and_a_second_crossing_do_not_fire_again(self, deliver):
        organization = organization_with(1000)
        alert = platform_alert("percentage", 80)
        deliver(ingest, organization, 900)
        deliver(ingest, organization, 50)  # still past it: a second write
        # The allowance doubles: usage falls below 80 % and climbs past it again.
        organization_update(organization=organization, credit_allowance=D(2000))
        deliver(ingest, organization, 700)  # 1,650 of 2,000: crossed a second time

        assert len(firings(alert)) == 1
        assert len(mail.outbox) == 1

    def test_a_new_period_fires_again(self, deliver):
        organization = organization_with(1000)
        alert = platform_alert("absolute", 500)
        deliver(ingest, organization, 600)
        with time_machine.travel(NEXT_PERIOD, tick=False):
            deliver(ingest, organization, 499)
            assert len(firings(alert)) == 1
            deliver(ingest, organization, 1)

        first, second = firings(alert)
        assert second.period_start == datetime(2026, 4, 1, tzinfo=UTC)
        assert first.period_start == datetime(2026, 3, 1, tzinfo=UTC)
        assert len(mail.outbox) == 2

    def test_consume_fires_it_too(self, deliver):
        organization = organization_with(1000)
        member = organization.memberships.get()
        alert = platform_alert("absolute", 10)
        assert deliver(consume, organization, member, 10).allowed
        assert len(firings(alert, organization)) == 1


class TestScope:
    def test_a_plan_alert_fires_only_for_organizations_on_that_plan(self, team, free, deliver):
        on_team = organization_with(None, plan=team)
        on_free = organization_with(None, plan=free)
        on_none = organization_with(1000)
        alert = platform_alert("absolute", 50, plan=team)
        everyone = platform_alert("absolute", 50, name="Everyone")

        for organization in (on_team, on_free, on_none):
            deliver(ingest, organization, 60)

        assert [f.organization for f in firings(alert)] == [on_team]
        assert firings(alert)[0].plan == team
        assert {f.organization for f in firings(everyone)} == {on_team, on_free, on_none}

    def test_a_plan_watched_by_a_platform_alert_is_not_deleted(self, team):
        platform_alert("absolute", 5, plan=team)
        with pytest.raises(ProtectedError):
            team.delete()

    def test_a_percentage_without_an_allowance_never_fires(self, deliver):
        organization = organization_with(None)
        alert = platform_alert("percentage", 1)
        deliver(ingest, organization, 1_000_000)
        platform_alert_settle(alert.pk)
        assert firings(alert) == []

    def test_the_plans_allowance_is_the_one_in_force(self, team, deliver):
        organization = organization_with(None, plan=team)  # 1,000 from the plan
        alert = platform_alert("percentage", 50)
        deliver(ingest, organization, 499)
        assert firings(alert) == []
        deliver(ingest, organization, 1)
        assert firings(alert)[0].allowance == D(1000)

    def test_a_disabled_alert_does_not_fire(self, deliver):
        organization = organization_with(1000)
        alert = platform_alert("absolute", 5)
        alert.enabled = False
        platform_alert_save(alert=alert)
        deliver(ingest, organization, 10)
        assert firings(alert) == []


class TestBalanceDepleted:
    def test_the_allowance_used_up_depletes_the_balance(self, deliver):
        organization = organization_with(100)
        alert = platform_alert("balance_depleted", None)
        deliver(ingest, organization, 99)
        assert firings(alert) == []
        deliver(ingest, organization, 5)  # past the allowance: the balance is 0
        deliver(ingest, organization, 5)

        (firing,) = firings(alert)
        assert (firing.balance, firing.value, firing.threshold) == (D(0), D(104), None)

    def test_grants_used_up_deplete_the_balance(self, deliver):
        organization = organization_with(100)
        credit_grant(organization, 50)
        organization.refresh_from_db()
        alert = platform_alert("balance_depleted", None)
        deliver(ingest, organization, 120)  # 30 of the grant's 50 left
        assert firings(alert) == []

        deliver(ingest, organization, 30)

        (firing,) = firings(alert)
        assert (firing.balance, firing.value) == (D(0), D(150))

    def test_no_balance_never_depletes(self, deliver):
        organization = organization_with(None)  # no allowance, no grant: no balance
        alert = platform_alert("balance_depleted", None)
        deliver(ingest, organization, 10)
        platform_alert_settle(alert.pk)
        assert firings(alert) == []


class TestAlreadyPassed:
    def test_a_new_alert_fires_off_the_request_for_those_already_past(self, team, deliver):
        past, below = organization_with(1000), organization_with(1000)
        on_team = organization_with(None, plan=team)
        ingest(past, 900)
        ingest(below, 100)
        ingest(on_team, 950)

        alert = deliver(platform_alert, "percentage", 80)  # the task runs on commit

        assert {f.organization for f in firings(alert)} == {past, on_team}
        assert sorted(message.to[0] for message in mail.outbox) == [SALES, SALES]
        assert PlatformAlert.objects.get(pk=alert.pk).settled_revision == alert.revision

    def test_an_edited_threshold_fires_where_now_passed_and_only_once(self, deliver):
        organization = organization_with(1000)
        ingest(organization, 600)
        alert = deliver(platform_alert, "percentage", 80)
        assert firings(alert) == []

        alert.threshold = D(50)
        deliver(platform_alert_save, alert=alert)
        assert len(firings(alert)) == 1
        alert.threshold = D(40)
        deliver(platform_alert_save, alert=alert)  # fired this period already
        assert len(firings(alert)) == 1

    def test_a_lost_task_is_redone_by_the_beat(self):
        organization, below = organization_with(1000), organization_with(1000)
        ingest(organization, 150)
        ingest(below, 99)
        alert = platform_alert("absolute", 100)  # its on-commit task never runs here
        assert firings(alert) == []
        assert platform_alerts_settle_due() == 1
        assert [f.organization for f in firings(alert)] == [organization]
        assert platform_alerts_settle_due() == 0

    def test_the_backfill_reads_only_organizations_at_or_past_it(self, team):
        past = organization_with(1000)
        at_it = organization_with(None, plan=team)
        below = organization_with(1000)
        last_period = organization_with(1000)
        no_allowance = organization_with(None)
        ingest(past, 900)
        ingest(at_it, 800)
        ingest(below, 799)
        ingest(no_allowance, 5000)
        with time_machine.travel(datetime(2026, 2, 20, tzinfo=UTC), tick=False):
            ingest(last_period, 900)
        percentage = platform_alert("percentage", 80)
        absolute = platform_alert("absolute", 850)

        assert set(_past_it(percentage, NOW)) == {past, at_it}
        assert set(_past_it(absolute, NOW)) == {past, no_allowance}
        platform_alert_settle(percentage.pk)
        assert set(_past_it(percentage, NOW)) == set()  # fired for both this period

    def test_the_balance_depleted_already(self, deliver):
        used_up, with_grant = organization_with(100), organization_with(100)
        ingest(used_up, 150)
        credit_grant(with_grant, 10)
        with_grant.refresh_from_db()
        ingest(with_grant, 50)
        alert = deliver(platform_alert, "balance_depleted", None)
        assert [f.organization for f in firings(alert)] == [used_up]

    def test_an_allowance_change_fires_what_it_passes(self, deliver):
        organization = organization_with(1000)
        ingest(organization, 500)
        alert = platform_alert("percentage", 80)
        deliver(organization_update, organization=organization, credit_allowance=D(600))
        assert firings(alert)[0].allowance == D(600)


class TestNotifications:
    def test_an_email_to_each_listed_address_and_no_one_else(self, team, deliver):
        organization = organization_with(None, plan=team)
        platform_alert("percentage", 80, emails=["sales@headroom.example", "cs@headroom.example"])
        deliver(ingest, organization, 850)

        assert sorted(message.to[0] for message in mail.outbox) == [
            "cs@headroom.example",
            "sales@headroom.example",
        ]
        admin = organization.memberships.get().user.email
        assert all(admin not in message.to for message in mail.outbox)
        message = mail.outbox[0]
        assert organization.name in message.subject
        assert "reached 80% of its credit allowance" in message.subject
        html = message.alternatives[0][0]
        for part in (message.body, html):
            assert organization.name in part
            assert organization.slug in part
            assert "Team" in part or "team" in part
            assert "850" in part
            assert "1,000" in part
            assert "80% of the allowance" in part
            assert "Mar 1, 2026 to Apr 1, 2026" in part

    def test_a_signed_platform_webhook(self, settings, team):
        settings.PLATFORM_WEBHOOK_SECRET = secret = webhook_secret_generate()
        organization = organization_with(None, plan=team)
        with webhook_receiver() as receiver:
            alert = platform_alert("absolute", 100, urls=[receiver.url + "platform"])
            ingest(organization, 120)
            webhook = Notification.objects.get(channel=Channel.PLATFORM_WEBHOOK)
            assert webhook.recipient == receiver.url + "platform"
            notification_deliver(notification_id=webhook.pk)
            (delivery,) = receiver.wait_for(1)

        payload = Webhook(secret).verify(delivery.body, delivery.headers)
        firing = firings(alert)[0]
        assert payload == {
            "type": "platform_alert.triggered",
            "timestamp": "2026-03-10T12:00:00Z",
            "data": {
                "organization": {
                    "slug": organization.slug,
                    "name": organization.name,
                    "plan": "team",
                },
                "usage": {"used": "120", "allowance": "1000"},
                "alert": {
                    "id": alert.pk,
                    "name": "Outgrowing its plan",
                    "threshold_type": "absolute",
                    "threshold": "100",
                },
                "period": {"start": "2026-03-01T00:00:00Z", "end": "2026-04-01T00:00:00Z"},
                "triggered_at": "2026-03-10T12:00:00Z",
            },
        }
        assert firing.triggered_at == NOW
        with pytest.raises(Exception, match="signature"):
            Webhook(webhook_secret_generate()).verify(delivery.body, delivery.headers)

    def test_balance_depleted_payload_has_the_balance(self, settings):
        settings.PLATFORM_WEBHOOK_SECRET = webhook_secret_generate()
        organization = organization_with(100)
        platform_alert("balance_depleted", None, urls=["https://hooks.example.com/platform"])
        ingest(organization, 100)
        payload = Notification.objects.get(channel=Channel.PLATFORM_WEBHOOK).payload
        assert payload["data"]["usage"] == {"used": "100", "allowance": "100", "balance": "0"}
        assert payload["data"]["organization"]["plan"] is None
        assert payload["data"]["alert"]["threshold"] is None

    def test_without_a_secret_no_platform_webhook_is_written(self, settings):
        settings.PLATFORM_WEBHOOK_SECRET = ""
        organization = organization_with(1000)
        platform_alert("absolute", 1, urls=["https://hooks.example.com/platform"])
        ingest(organization, 5)
        assert list(Notification.objects.values_list("channel", flat=True)) == [Channel.EMAIL]

    def test_not_shown_to_the_organization_as_its_webhooks(self, settings, deliver):
        """The organization's Webhooks page lists its own endpoints' deliveries only."""
        settings.PLATFORM_WEBHOOK_SECRET = webhook_secret_generate()
        organization = organization_with(1000)
        platform_alert("absolute", 1, urls=["https://hooks.example.com/platform"])
        ingest(organization, 5)
        assert Notification.objects.filter(channel=Channel.PLATFORM_WEBHOOK).count() == 1
        assert webhook_deliveries_recent(organization=organization) == []


class TestHotPathCost:
    def test_the_configuration_is_one_query_with_the_platform_alerts(self, team):
        organization = organization_with(None, plan=team)
        mine = platform_alert("absolute", 5)
        on_team = platform_alert("percentage", 5, plan=team)
        platform_alert("percentage", 5, plan=plan_create(key="other", name="Other"))
        off = platform_alert("absolute", 7, name="Off")
        off.enabled = False
        platform_alert_save(alert=off)

        with CaptureQueriesContext(connection) as queries:
            configuration = _alert_configuration(organization)

        assert len(queries) == 1
        assert [a.pk for a in configuration.platform_alerts] == [mine.pk, on_team.pk]
        assert configuration.alerts == [] and configuration.policy is None

    @pytest.mark.parametrize(
        ("write", "balance", "queries_on_main"),
        [
            # One fewer each since the day's and the source's totals moved in
            # one statement (issue 19).
            ("ingest", "none kept", 8),
            ("consume", "none kept", 9),
            ("ingest", "kept, at 0", 10),  # grants: the balance kept, and used up already
            ("consume", "kept", 11),
        ],
    )
    def test_a_write_crossing_nothing_costs_what_it_did_before(
        self, team, write, balance, queries_on_main
    ):
        """Counted on main before platform alerts existed (same setup, less
        the one statement saved since), and here with three platform alerts
        that apply: not one query more.
        """
        platform_alert("percentage", 80)
        platform_alert("absolute", 900, plan=team)
        platform_alert("balance_depleted", None)
        organization = organization_with(None, plan=team)
        member = organization.memberships.get()
        if balance != "none kept":
            credit_grant(organization, 5)
            if write == "ingest":
                ingest(Organization.objects.get(pk=organization.pk), 1010)  # fires all three

        def queries_of_a_write(key: str) -> int:
            fresh = Organization.objects.select_related("plan").get(pk=organization.pk)
            with CaptureQueriesContext(connection) as queries:
                if write == "ingest":
                    ingest(fresh, 1, key=key)
                else:
                    consume(fresh, member, 1, key=key)
            return len(queries)

        queries_of_a_write("warm")
        firings_before = PlatformFiring.objects.count()
        assert queries_of_a_write("counted") == queries_on_main
        assert PlatformFiring.objects.count() == firings_before


@pytest.mark.django_db(transaction=True)
def test_twenty_organizations_crossing_at_once_fire_once_each():
    organizations = [organization_with(1000) for _ in range(20)]
    alert = platform_alert("absolute", 100)

    def cross(index: int) -> None:
        organization = Organization.objects.get(pk=organizations[index % 20].pk)
        ingest(organization, 60, key=f"k{index}")

    run_in_threads(40, cross)  # two writes each, the second of each crossing
    for organization in organizations:
        (firing,) = firings(alert, organization)
        assert firing.value == D(120)
    assert PlatformFiring.objects.count() == 20
    assert Notification.objects.filter(recipient=SALES).count() == 20


@pytest.mark.django_db(transaction=True)
def test_the_backfill_twice_and_each_organizations_evaluation_at_once_fire_once():
    """Three paths find the same organizations already past a new alert at
    the same moment: two runs of its backfill, and each organization's own
    evaluation (a change of its configuration). One firing and one email each.
    """
    organizations = [organization_with(1000) for _ in range(10)]
    for organization in organizations:
        ingest(organization, 150)
    # Stored as the admin would, its backfill not run yet (no task queued here).
    alert = PlatformAlert.objects.create(
        name="Sales", threshold_type="absolute", threshold=D(100), emails=[SALES], revision=1
    )

    def settle() -> None:
        platform_alert_settle(alert.pk)

    def evaluate(index: int) -> None:
        with transaction.atomic():
            alerts_evaluate_organization(
                organization=Organization.objects.get(pk=organizations[index].pk)
            )

    run_at_once(settle, settle, *(functools.partial(evaluate, index) for index in range(10)))

    for organization in organizations:
        assert len(firings(alert, organization)) == 1
    assert Notification.objects.filter(recipient=SALES).count() == 10
