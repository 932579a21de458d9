"""Balance alerts, auto top-up and expiring credits (SPEC §9): each rule, and
exactly once under concurrency and with two periodic jobs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core import mail

from alerts.models import (
    BalanceAlert,
    BalanceAlertStatus,
    Firing,
    FiringKind,
    Notification,
    WebhookEndpoint,
)
from alerts.services.changes import organization_update
from alerts.services.credit_settings import (
    AutoTopUpInput,
    auto_top_up_set,
    balance_alert_create,
    balance_alert_update,
)
from alerts.services.credits import credit_balances_check, credit_grant_void
from billing.balance import credit_balance_get
from billing.models import CreditGrant, CreditLedgerEntry, GrantKind, LedgerEntryType
from billing.services.grants import next_check_at
from config.errors import InvalidInput
from tests.factories import MembershipFactory
from tests.fixtures import run_in_threads
from tests.helpers import clock_held_at, consume, ingest, run_daily_task
from tests.helpers import credit_grant as grant

pytestmark = pytest.mark.django_db

D = Decimal
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
frozen_time = clock_held_at(NOW)


def blocking(organization, allowance=None):
    organization.credit_allowance = None if allowance is None else D(allowance)
    organization.block_when_exhausted = True
    organization.save()
    return organization


def fired(kind: str) -> list[Decimal]:
    return list(Firing.objects.filter(kind=kind).order_by("id").values_list("value", flat=True))


def status(alert: BalanceAlert) -> str:
    alert.refresh_from_db()
    return alert.status


def subjects() -> list[str]:
    return [message.subject for message in mail.outbox]


class TestBalanceAlerts:
    def test_depleted_fires_once_when_the_balance_reaches_zero_and_rearms_when_it_climbs_back(
        self, organization, owner, member, deliver
    ):
        blocking(organization)
        grant(organization, 5)
        alert = balance_alert_create(organization=organization, alert_type="depleted")
        deliver(consume, organization, member, 3)
        assert fired(FiringKind.BALANCE_DEPLETED) == []
        deliver(consume, organization, member, 2)
        assert fired(FiringKind.BALANCE_DEPLETED) == [D(0)]
        assert status(alert) == BalanceAlertStatus.IN_ALARM
        assert subjects() == ["[Acme Inc] The credit balance is used up"]
        deliver(consume, organization, member, 1)  # refused: still 0, no second firing
        assert len(fired(FiringKind.BALANCE_DEPLETED)) == 1
        deliver(grant, organization, 1)
        assert status(alert) == BalanceAlertStatus.ARMED
        deliver(consume, organization, member, 1)
        assert fired(FiringKind.BALANCE_DEPLETED) == [D(0), D(0)]

    def test_dropped_fires_from_at_or_above_to_below_its_threshold(
        self, organization, owner, member, deliver
    ):
        blocking(organization, allowance=10)
        alert = balance_alert_create(
            organization=organization, alert_type="dropped", threshold=D(4)
        )
        deliver(consume, organization, member, 6)  # 10 -> 4: not below
        assert fired(FiringKind.BALANCE_DROPPED) == []
        deliver(consume, organization, member, "0.5")
        assert fired(FiringKind.BALANCE_DROPPED) == [D("3.5")]
        assert "dropped below 4 credits" in mail.outbox[0].subject
        deliver(ingest, organization, 1, user=member)
        assert len(fired(FiringKind.BALANCE_DROPPED)) == 1
        deliver(grant, organization, 2)  # 2.5 + 2 = 4.5: back at or above, re-armed
        assert status(alert) == BalanceAlertStatus.ARMED

    def test_recovered_fires_each_time_the_balance_goes_from_zero_to_above(
        self, organization, owner, member, deliver
    ):
        blocking(organization)
        grant(organization, 1)
        balance_alert_create(organization=organization, alert_type="recovered")
        deliver(consume, organization, member, 1)
        deliver(grant, organization, 3)
        deliver(consume, organization, member, 3)
        deliver(grant, organization, 2)
        assert fired(FiringKind.BALANCE_RECOVERED) == [D(3), D(2)]

    def test_a_new_alert_already_met_starts_in_alarm_without_firing(self, organization, owner):
        blocking(organization, allowance=10)
        alert = balance_alert_create(
            organization=organization, alert_type="dropped", threshold=D(50)
        )
        assert alert.status == BalanceAlertStatus.IN_ALARM
        assert not Firing.objects.exists()

    def test_editing_the_threshold_rearms(self, organization, owner, member, deliver):
        blocking(organization, allowance=10)
        alert = balance_alert_create(
            organization=organization, alert_type="dropped", threshold=D(5)
        )
        deliver(consume, organization, member, 6)
        assert status(alert) == BalanceAlertStatus.IN_ALARM
        balance_alert_update(
            alert=alert, alert_type="dropped", threshold=D(3), notify="all_admins", admins=[]
        )
        assert status(alert) == BalanceAlertStatus.ARMED
        deliver(consume, organization, member, 2)
        assert fired(FiringKind.BALANCE_DROPPED) == [D(4), D(2)]

    def test_one_email_per_recipient_per_write_about_the_most_severe(
        self, organization, owner, member, deliver
    ):
        blocking(organization, allowance=10)
        for threshold in (8, 5):
            balance_alert_create(
                organization=organization, alert_type="dropped", threshold=D(threshold)
            )
        balance_alert_create(organization=organization, alert_type="depleted")
        deliver(consume, organization, member, 10)
        assert subjects() == ["[Acme Inc] The credit balance is used up (and 2 more alerts)"]

    def test_webhook_events(self, organization, owner, member, deliver):
        blocking(organization, allowance=2)
        WebhookEndpoint.objects.create(
            organization=organization,
            url="https://hooks.example.com/x",
            secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            events=["credit_balance.depleted", "credit_grant.created"],
        )
        balance_alert_create(organization=organization, alert_type="depleted")
        consume(organization, member, 2)
        grant(organization, 1)
        events = list(
            Notification.objects.filter(channel="webhook").values_list("event_type", flat=True)
        )
        assert sorted(events) == ["credit_balance.depleted", "credit_grant.created"]

    def test_at_most_ten(self, organization):
        for _ in range(10):
            balance_alert_create(organization=organization, alert_type="depleted")
        with pytest.raises(InvalidInput) as refused:
            balance_alert_create(organization=organization, alert_type="depleted")
        assert refused.value.code == "too_many_alerts"
        assert BalanceAlert.objects.count() == 10

    @pytest.mark.parametrize(
        ("alert_type", "threshold"), [("dropped", None), ("depleted", D(3)), ("empty", None)]
    )
    def test_bad_alerts_are_refused(self, organization, alert_type, threshold):
        with pytest.raises(InvalidInput):
            balance_alert_create(
                organization=organization, alert_type=alert_type, threshold=threshold
            )
        assert not BalanceAlert.objects.exists()


class TestTimeDrivenChanges:
    def test_an_expiry_is_evaluated_by_the_periodic_check(self, organization, owner, deliver):
        blocking(organization)
        grant(organization, 5, expires_at=NOW + timedelta(hours=1))
        balance_alert_create(organization=organization, alert_type="depleted")
        later = NOW + timedelta(hours=1, seconds=20)
        with time_machine.travel(later, tick=False):
            deliver(credit_balances_check, now=later)
            deliver(credit_balances_check, now=later)
        assert fired(FiringKind.BALANCE_DEPLETED) == [D(0)]

    def test_beat_writes_an_expiry_within_a_minute(self, organization, owner):
        grant(organization, 5, expires_at=NOW + timedelta(hours=1))
        run_daily_task("alerts.tasks.check_credit_balances", at=NOW + timedelta(hours=1), every=60)
        expiry = CreditLedgerEntry.objects.get(type=LedgerEntryType.EXPIRY)
        assert expiry.credits == D(-5)

    def test_a_grant_becoming_effective_is_evaluated(self, organization, owner, deliver):
        blocking(organization)
        balance_alert_create(organization=organization, alert_type="recovered")
        grant(organization, 5, effective_at=NOW + timedelta(hours=3))
        assert fired(FiringKind.BALANCE_RECOVERED) == []
        later = NOW + timedelta(hours=3, seconds=10)
        with time_machine.travel(later, tick=False):
            deliver(credit_balances_check, now=later)
        assert fired(FiringKind.BALANCE_RECOVERED) == [D(5)]

    def test_a_new_periods_allowance_is_evaluated(self, organization, owner, member, deliver):
        blocking(organization, allowance=10)
        balance_alert_create(organization=organization, alert_type="recovered")
        consume(organization, member, 10)
        period_end = credit_balance_get(organization=organization, now=NOW).period.end
        later = period_end + timedelta(seconds=30)
        with time_machine.travel(later, tick=False):
            deliver(credit_balances_check, now=later)
        assert fired(FiringKind.BALANCE_RECOVERED) == [D(10)]

    def test_a_raised_allowance_is_evaluated_at_once(self, organization, owner, member, deliver):
        blocking(organization, allowance=10)
        depleted = balance_alert_create(organization=organization, alert_type="depleted")
        balance_alert_create(organization=organization, alert_type="recovered")
        consume(organization, member, 10)
        deliver(organization_update, organization=organization, credit_allowance=D(15))
        assert fired(FiringKind.BALANCE_RECOVERED) == [D(5)]
        assert status(depleted) == BalanceAlertStatus.ARMED

    def test_the_next_check_is_the_first_moment_a_grant_changes_or_calls_for_a_notice(
        self, organization, settings
    ):
        settings.GRANT_EXPIRY_NOTICE_DAYS = 7
        blocking(organization, allowance=10)
        grant(organization, 5, expires_at=NOW + timedelta(days=30))
        grant(organization, 5, effective_at=NOW + timedelta(days=40))

        def next_at(*, watched: bool = False):
            return next_check_at(organization=organization, now=NOW, watched=watched)

        assert next_at() == NOW + timedelta(days=23)  # the expiry notice, 7 days ahead
        CreditGrant.objects.update(expiry_notice_sent_at=NOW)
        assert next_at() == NOW + timedelta(days=30)  # then the expiry itself
        period_end = credit_balance_get(organization=organization, now=NOW).period.end
        assert next_at(watched=True) == period_end  # a new allowance, sooner, when watched
        CreditGrant.objects.filter(expires_at__isnull=False).update(expired_at=NOW)
        assert next_at() == NOW + timedelta(days=40)  # a grant becoming effective

    def test_the_check_reads_only_organizations_that_are_due(
        self, organization, other_organization
    ):
        grant(organization, 5, expires_at=NOW + timedelta(days=30))
        grant(other_organization, 5, expires_at=NOW + timedelta(hours=1))
        later = NOW + timedelta(hours=1)
        assert credit_balances_check(now=later) == 1

    def test_expiring_credits_are_told_once_notice_days_before(
        self, organization, owner, deliver, settings
    ):
        settings.GRANT_EXPIRY_NOTICE_DAYS = 7
        expires = NOW + timedelta(days=10)
        deliver(grant, organization, 5, expires_at=expires)
        assert deliver(credit_balances_check, now=NOW) == 0
        notice_time = expires - timedelta(days=7)
        with time_machine.travel(notice_time, tick=False):
            deliver(credit_balances_check, now=notice_time)
            deliver(credit_balances_check, now=notice_time)
        assert subjects() == [f"[Acme Inc] 5 credits expire on {expires:%b} {expires.day}"]
        assert Notification.objects.filter(event_type="credit_email").count() == 1


class TestAutoTopUp:
    def test_a_write_that_takes_the_balance_below_the_threshold_tops_up(
        self, organization, owner, member, deliver
    ):
        blocking(organization, allowance=10)
        auto_top_up_set(
            organization=organization,
            settings=AutoTopUpInput(enabled=True, threshold=D(5), credits=D(20), priority=5),
        )
        deliver(consume, organization, member, 6)
        (top_up,) = CreditGrant.objects.filter(kind=GrantKind.TOP_UP)
        assert (top_up.credits, top_up.priority) == (D(20), 5)
        assert credit_balance_get(organization=organization, now=NOW).balance == D(24)
        assert "Auto top-up added 20 credits" in subjects()[0]

    def test_past_max_per_period_none_is_made_and_admins_are_told_once(
        self, organization, owner, member, deliver
    ):
        blocking(organization, allowance=10)
        auto_top_up_set(
            organization=organization,
            settings=AutoTopUpInput(enabled=True, threshold=D(5), credits=D(2), max_per_period=2),
        )
        for _ in range(6):
            deliver(consume, organization, member, 3)
        assert CreditGrant.objects.filter(kind=GrantKind.TOP_UP).count() == 2
        limit_notices = [s for s in subjects() if "reached its limit" in s]
        assert len(limit_notices) == 1

    def test_once_per_crossing_not_again_while_still_below(self, organization, owner, member):
        blocking(organization, allowance=10)
        auto_top_up_set(
            organization=organization,
            settings=AutoTopUpInput(enabled=True, threshold=D(8), credits=D(1)),
        )
        consume(organization, member, 5)  # 10 -> 5, topped up to 6: still below 8
        consume(organization, member, 1)  # 6 -> 5: no new crossing
        assert CreditGrant.objects.filter(kind=GrantKind.TOP_UP).count() == 1
        grant(organization, 4)  # 9: back above
        consume(organization, member, 2)  # 9 -> 7: a new crossing
        assert CreditGrant.objects.filter(kind=GrantKind.TOP_UP).count() == 2

    def test_enabled_needs_a_threshold_and_credits(self, organization):
        with pytest.raises(InvalidInput) as refused:
            auto_top_up_set(
                organization=organization,
                settings=AutoTopUpInput(enabled=True, threshold=None, credits=D(5)),
            )
        assert refused.value.field == "threshold"


@pytest.mark.django_db(transaction=True)
class TestConcurrency:
    def test_twenty_writes_crossing_the_threshold_make_one_top_up(self, organization, owner):
        blocking(organization, allowance=100)
        auto_top_up_set(
            organization=organization,
            settings=AutoTopUpInput(enabled=True, threshold=D(50), credits=D(100)),
        )
        members = MembershipFactory.create_batch(5, organization=organization)
        consume(organization, members[0], 50)  # balance 50: the next write crosses
        run_in_threads(
            20,
            lambda i: (
                consume(organization, members[i % 5], 1, key=f"c{i}")
                if i % 2
                else ingest(organization, 1, user=members[i % 5], key=f"i{i}")
            ),
        )
        assert CreditGrant.objects.filter(kind=GrantKind.TOP_UP).count() == 1

    def test_concurrent_writes_fire_a_balance_alert_once(self, organization, owner):
        blocking(organization, allowance=20)
        balance_alert_create(organization=organization, alert_type="depleted")
        members = MembershipFactory.create_batch(5, organization=organization)
        run_in_threads(30, lambda i: consume(organization, members[i % 5], 1, key=f"c{i}"))
        assert fired(FiringKind.BALANCE_DEPLETED) == [D(0)]

    def test_voids_and_consumes_at_once_fire_once(self, organization, owner):
        blocking(organization)
        grants = [grant(organization, 1) for _ in range(5)]
        balance_alert_create(organization=organization, alert_type="depleted")
        members = MembershipFactory.create_batch(5, organization=organization)
        run_in_threads(
            10,
            lambda i: (
                credit_grant_void(organization=organization, grant_id=grants[i // 2].pk)
                if i % 2
                else consume(organization, members[i // 2], 1, key=f"c{i}")
            ),
        )
        assert credit_balance_get(organization=organization, now=NOW).balance == D(0)
        assert fired(FiringKind.BALANCE_DEPLETED) == [D(0)]
