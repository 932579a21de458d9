"""Holds (SPEC §13), one rule per test: a hold is allowed as a consume would
be, counts against the member's limit and the organization's cap or balance
until settled, released or expired, and the first of those three wins.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine

from alerts.models import Firing
from alerts.services.holds import (
    hold_create,
    hold_release,
    hold_settle,
    holds_expire,
)
from billing.balance import usage_check
from billing.models import (
    ConsumeAnswer,
    CreditHold,
    CreditLedgerEntry,
    HoldStatus,
    MemberUsage,
    OrganizationUsage,
    UsageEvent,
    UserLimitPolicy,
)
from billing.rules import ORGANIZATION_CREDITS_EXHAUSTED, USER_LIMIT_REACHED
from billing.selectors import current_period, organization_used
from config.errors import Conflict, InvalidInput
from tests.helpers import absolute_alert, consume, counted, credit_grant, ingest, spend

pytestmark = pytest.mark.django_db

D = Decimal
NOW = datetime(2026, 3, 10, 12, tzinfo=UTC)


@pytest.fixture(autouse=True)
def frozen_time():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


def limits(organization, default, excluded=()):
    UserLimitPolicy.objects.update_or_create(
        organization=organization,
        defaults={"enabled": True, "default_limit": D(default), "excluded_sources": list(excluded)},
    )


def hold(member, credits, *, key=None, source="assistant", expires_in=900):
    return hold_create(
        organization=member.organization,
        membership=member,
        credits=D(credits),
        source=source,
        idempotency_key=key,
        expires_in=expires_in,
    )


def held(member):
    return MemberUsage.objects.get(membership=member).held


def organization_held(organization):
    return OrganizationUsage.objects.get(organization=organization).held


def settle(answer, organization, credits):
    return hold_settle(organization=organization, hold_id=answer.body["id"], credits=D(credits))


def release(answer, organization):
    return hold_release(organization=organization, hold_id=answer.body["id"])


class TestGranting:
    def test_a_hold_answers_as_the_spec_shows(self, organization, member):
        limits(organization, 100)
        answer = hold(member, 30, key="h1")
        assert answer.status_code == 201
        assert answer.body == {
            "id": CreditHold.objects.get().pk,
            "allowed": True,
            "held": "30",
            "expires_at": "2026-03-10T12:15:00Z",
            "used": "30",
            "limit": "100",
            "remaining": "70",
        }

    def test_a_hold_counts_against_the_members_limit(self, organization, member):
        limits(organization, 100)
        assert hold(member, 70).allowed
        refused = consume(organization, member, 31)
        assert (refused.allowed, refused.reason) == (False, USER_LIMIT_REACHED)
        assert refused.used == D(70)  # usage toward the limit, holds included
        assert consume(organization, member, 30).allowed
        assert counted(member) == D(30) and held(member) == D(70)

    def test_a_hold_is_refused_as_a_consume_would_be_and_holds_nothing(self, organization, member):
        limits(organization, 10)
        spend(member, 8)
        answer = hold(member, 3)
        assert answer.status_code == 402
        assert answer.body["reason"] == USER_LIMIT_REACHED
        assert answer.body["used"] == "8" and answer.body["limit"] == "10"
        assert not CreditHold.objects.exists()
        assert held(member) == 0 and organization_held(organization) == 0

    def test_a_hold_counts_against_the_organizations_allowance(self, organization, member, owner):
        organization.credit_allowance = D(100)
        organization.save()
        assert hold(member, 60).allowed
        refused = consume(organization, owner, 41)
        assert refused.reason == ORGANIZATION_CREDITS_EXHAUSTED
        assert consume(organization, owner, 40).allowed
        assert hold(owner, D("0.000001")).status_code == 402

    def test_a_hold_counts_against_the_credit_balance(self, organization, member, owner):
        credit_grant(organization, 50)
        assert hold(member, 30).allowed
        refused = consume(organization, owner, 21)
        assert refused.reason == ORGANIZATION_CREDITS_EXHAUSTED
        assert refused.balance == D(20)  # the balance less what holds hold
        assert not CreditLedgerEntry.objects.filter(type="drawdown").exists()
        assert consume(organization, owner, 20).allowed
        assert hold(owner, 1).status_code == 402

    def test_the_allowance_and_the_grants_together_cover_holds(self, organization, member):
        organization.credit_allowance = D(10)
        organization.save()
        credit_grant(organization, 5)
        assert hold(member, 12).allowed
        assert consume(organization, member, 3).allowed
        assert not consume(organization, member, D("0.000001")).allowed

    def test_an_excluded_source_holds_against_the_organization_only(self, organization, member):
        limits(organization, 10, excluded=["workflow"])
        organization.credit_allowance = D(100)
        organization.save()
        assert hold(member, 50, source="workflow").allowed
        assert held(member) == 0 and organization_held(organization) == D(50)
        assert consume(organization, member, 10).allowed

    def test_check_counts_holds(self, organization, member):
        limits(organization, 10)
        hold(member, 8)
        decision = usage_check(organization=organization, membership=member, credits=D(3))
        assert (decision.allowed, decision.used) == (False, D(8))


class TestIdempotency:
    def test_a_repeated_hold_gets_the_first_answer(self, organization, member):
        first = hold(member, 5, key="same")
        again = hold(member, 5, key="same")
        assert again.replayed and again.body == first.body and again.status_code == 201
        assert CreditHold.objects.count() == 1 and held(member) == D(5)

    def test_a_repeated_refusal_gets_the_refusal(self, organization, member):
        limits(organization, 1)
        assert hold(member, 5, key="same").status_code == 402
        limits(organization, 100)
        assert hold(member, 5, key="same").status_code == 402

    def test_a_hold_key_with_another_body_is_409(self, organization, member):
        hold(member, 5, key="same")
        with pytest.raises(Conflict) as error:
            hold(member, 6, key="same")
        assert error.value.code == "idempotency_key_reused"

    def test_consume_and_hold_share_one_namespace(self, organization, member):
        consume(organization, member, 5, key="consumed")
        with pytest.raises(Conflict):
            hold(member, 5, key="consumed")
        hold(member, 5, key="held")
        with pytest.raises(Conflict):
            consume(organization, member, 5, key="held")

    def test_an_ingested_key_is_taken_for_holds_and_a_hold_key_for_ingest(
        self, organization, member
    ):
        ingest(organization, 1, user=member, key="ingested")
        with pytest.raises(Conflict):
            hold(member, 5, key="ingested")
        hold(member, 5, key="held")
        with pytest.raises(Conflict):
            ingest(organization, 1, user=member, key="held")


class TestSettling:
    def test_settle_records_the_usage_and_frees_the_hold(self, organization, member):
        limits(organization, 100)
        answer = hold(member, 30, key="job")
        settled = settle(answer, organization, "12.5")
        assert (settled.status, settled.settled_credits) == (HoldStatus.SETTLED, D("12.5"))
        assert counted(member) == D("12.5") and held(member) == 0
        assert organization_used(
            organization=organization, period=current_period(organization)
        ) == D("12.5")
        assert organization_held(organization) == 0
        event = UsageEvent.objects.get()
        assert (event.idempotency_key, event.credits, event.properties) == (
            "job",
            D("12.5"),
            {"hold": settled.pk},
        )

    def test_settle_may_exceed_the_hold_and_the_limit(self, organization, member):
        limits(organization, 10)
        answer = hold(member, 5)
        settle(answer, organization, 25)
        assert counted(member) == D(25)

    def test_settle_for_zero_records_nothing(self, organization, member):
        answer = hold(member, 5)
        assert settle(answer, organization, 0).settled_credits == 0
        assert not UsageEvent.objects.exists() and held(member) == 0

    def test_settle_draws_down_grants(self, organization, member):
        grant = credit_grant(organization, 50)
        answer = hold(member, 30)
        settle(answer, organization, 20)
        grant.refresh_from_db()
        assert grant.remaining == D(30)

    def test_settle_evaluates_alerts(self, organization, member):
        absolute_alert(organization, 10)
        answer = hold(member, 30)
        assert not Firing.objects.exists()  # a hold is not usage
        settle(answer, organization, 15)
        assert Firing.objects.count() == 1

    def test_a_repeated_settle_gets_the_same_answer(self, organization, member):
        answer = hold(member, 30)
        first = settle(answer, organization, 10)
        again = settle(answer, organization, 10)
        assert (again.pk, again.status, again.settled_credits) == (first.pk, "settled", D(10))
        assert counted(member) == D(10)

    def test_settle_after_a_settle_for_other_credits_is_409(self, organization, member):
        answer = hold(member, 30)
        settle(answer, organization, 10)
        with pytest.raises(Conflict) as error:
            settle(answer, organization, 11)
        assert error.value.code == "hold_closed"
        assert counted(member) == D(10)


class TestReleasing:
    def test_release_frees_the_hold_and_records_nothing(self, organization, member):
        limits(organization, 10)
        answer = hold(member, 10)
        assert release(answer, organization).status == HoldStatus.RELEASED
        assert held(member) == 0 and organization_held(organization) == 0
        assert not UsageEvent.objects.exists()
        assert consume(organization, member, 10).allowed

    def test_a_repeated_release_gets_the_same_answer(self, organization, member):
        answer = hold(member, 10)
        release(answer, organization)
        assert release(answer, organization).status == HoldStatus.RELEASED
        assert held(member) == 0

    def test_the_first_closer_wins(self, organization, member):
        released = hold(member, 10)
        release(released, organization)
        with pytest.raises(Conflict) as error:
            settle(released, organization, 5)
        assert error.value.code == "hold_closed"
        settled = hold(member, 10)
        settle(settled, organization, 5)
        with pytest.raises(Conflict):
            release(settled, organization)
        assert counted(member) == D(5) and held(member) == 0


class TestExpiry:
    def test_from_expires_at_the_gate_counts_it_no_more(self, organization, member, frozen_time):
        limits(organization, 10)
        hold(member, 10, expires_in=60)
        frozen_time.move_to(NOW + timedelta(seconds=59))
        assert not consume(organization, member, 1).allowed
        assert not usage_check(organization=organization, membership=member, credits=D(1)).allowed
        frozen_time.move_to(NOW + timedelta(seconds=60))
        assert usage_check(organization=organization, membership=member, credits=D(10)).allowed
        assert consume(organization, member, 10).allowed  # no job has run
        expired = CreditHold.objects.get()
        assert (expired.status, expired.closed_at) == (
            HoldStatus.EXPIRED,
            NOW + timedelta(seconds=60),
        )
        assert held(member) == 0 and organization_held(organization) == 0

    def test_a_write_expires_other_members_holds_for_the_organizations_cap(
        self, organization, member, owner, frozen_time
    ):
        organization.credit_allowance = D(10)
        organization.save()
        hold(member, 10, expires_in=60)
        frozen_time.move_to(NOW + timedelta(minutes=1))
        assert consume(organization, owner, 10).allowed
        assert held(member) == 0

    def test_a_new_hold_expires_the_due_ones_first(self, organization, member, frozen_time):
        limits(organization, 10)
        hold(member, 10, expires_in=1)
        frozen_time.move_to(NOW + timedelta(seconds=1))
        assert hold(member, 10).allowed
        assert held(member) == D(10)

    def test_settle_and_release_after_expiry_are_409(self, organization, member, frozen_time):
        answer = hold(member, 10, expires_in=60)
        frozen_time.move_to(NOW + timedelta(seconds=60))
        with pytest.raises(Conflict) as error:
            settle(answer, organization, 5)
        assert error.value.code == "hold_closed" and "expired" in error.value.message
        with pytest.raises(Conflict):
            release(answer, organization)
        assert not UsageEvent.objects.exists()
        assert CreditHold.objects.get().status == HoldStatus.EXPIRED and held(member) == 0

    def test_the_beat_expires_once(self, organization, member, frozen_time):
        hold(member, 10, expires_in=60)
        frozen_time.move_to(NOW + timedelta(minutes=2))
        assert holds_expire() == 1
        assert holds_expire() == 0
        assert held(member) == 0 and organization_held(organization) == 0

    def test_a_hold_of_the_last_period_gives_back_to_its_period(
        self, organization, member, frozen_time
    ):
        limits(organization, 10)
        period = current_period(organization)
        frozen_time.move_to(period.end - timedelta(minutes=1))
        answer = hold(member, 10)
        frozen_time.move_to(period.end + timedelta(minutes=1))
        assert consume(organization, member, 10).allowed  # a new period, a new limit
        settle(answer, organization, 4)
        rows = dict(MemberUsage.objects.values_list("period_start", "held"))
        assert rows == {period.start: 0, period.end: 0}
        assert counted(member) == D(14)


class TestRemovedMember:
    def test_a_removed_members_hold_still_expires_and_settles(self, organization, member):
        answer = hold(member, 10)
        member.delete()
        settled = settle(answer, organization, 4)
        assert settled.membership is None and organization_held(organization) == 0
        assert organization_used(
            organization=organization, period=current_period(organization)
        ) == D(4)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"credits": D(0)}, "credits"),
        ({"expires_in": 0}, "expires_in"),
        ({"expires_in": 86_401}, "expires_in"),
    ],
)
def test_in_process_bad_input_is_refused_and_holds_nothing(organization, member, fields, field):
    arguments = {"organization": organization, "membership": member, "credits": D(5)} | fields
    with pytest.raises(InvalidInput) as error:
        hold_create(**arguments)
    assert error.value.field == field
    answer = hold(member, 5)
    with pytest.raises(InvalidInput):
        settle(answer, organization, -1)
    assert CreditHold.objects.count() == 1 and held(member) == D(5)


def test_a_refused_hold_records_its_answer_only(organization, member):
    limits(organization, 1)
    hold(member, 5, key="refused")
    assert ConsumeAnswer.objects.get().status_code == 402
    assert not UsageEvent.objects.exists()
