"""Changing the anchor day (SPEC §16): the period under way keeps its end, the
next runs to the new anchor day with a prorated allowance, and nothing of
the period under way resets: usage, caps, alerts.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from hypothesis import given, settings
from hypothesis import strategies as st

from accounts.models import Organization
from alerts.models import Firing
from alerts.services.changes import organization_update
from alerts.services.configuration import alert_create
from billing.periods import Period, anchor_day_change, anchor_segments, period_containing
from billing.selectors import (
    current_period,
    organization_used,
    organizations_with_usage_this_period,
)
from tests.accounts.test_admin import change_url, organization_form
from tests.fixtures import logged_in
from tests.helpers import consume


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def changed(anchor_day: int, new_anchor_day: int, now: datetime, history=()):
    change = anchor_day_change(
        anchor_day=anchor_day, history=list(history), new_anchor_day=new_anchor_day, now=now
    )
    return change, anchor_segments(change.anchor_history)


class TestPeriodsAfterAChange:
    def test_the_period_under_way_keeps_its_end_and_the_next_runs_to_the_new_day(self):
        change, history = changed(1, 15, utc(2026, 12, 10))

        def period(moment: datetime) -> Period:
            return period_containing(moment, anchor_day=15, history=history)

        assert period(utc(2026, 12, 10)) == Period(utc(2026, 12, 1), utc(2027, 1, 1))
        transition = period(utc(2027, 1, 1))
        assert (transition.start, transition.end) == (utc(2027, 1, 1), utc(2027, 1, 15))
        assert transition.month_end == utc(2027, 2, 1)
        assert period(utc(2027, 1, 15)) == Period(utc(2027, 1, 15), utc(2027, 2, 15))
        assert change.regular_from == utc(2027, 1, 15)

    def test_an_earlier_day_gives_a_transition_into_the_next_month(self):
        _, history = changed(15, 5, utc(2026, 12, 20))
        transition = period_containing(utc(2027, 1, 20), anchor_day=5, history=history)
        assert (transition.start, transition.end) == (utc(2027, 1, 15), utc(2027, 2, 5))
        assert transition.month_end == utc(2027, 2, 15)

    def test_the_past_keeps_its_own_periods(self):
        _, history = changed(1, 15, utc(2026, 12, 10))
        assert period_containing(utc(2026, 7, 3), anchor_day=15, history=history) == Period(
            utc(2026, 7, 1), utc(2026, 8, 1)
        )

    def test_changed_twice_in_one_period_the_last_choice_counts(self):
        change, _ = changed(1, 15, utc(2026, 12, 10))
        _, history = changed(15, 20, utc(2026, 12, 12), change.anchor_history)
        transition = period_containing(utc(2027, 1, 2), anchor_day=20, history=history)
        assert (transition.start, transition.end) == (utc(2027, 1, 1), utc(2027, 1, 20))

    def test_changed_back_in_the_same_period_nothing_changes(self):
        change, _ = changed(1, 15, utc(2026, 12, 10))
        back, history = changed(15, 1, utc(2026, 12, 12), change.anchor_history)
        assert history == ()
        assert back.regular_from is None

    def test_changed_again_during_the_shorter_period(self):
        first, _ = changed(1, 15, utc(2026, 12, 10))
        _, history = changed(15, 20, utc(2027, 1, 5), first.anchor_history)

        def period(moment: datetime) -> tuple[datetime, datetime]:
            found = period_containing(moment, anchor_day=20, history=history)
            return found.start, found.end

        assert period(utc(2026, 12, 31)) == (utc(2026, 12, 1), utc(2027, 1, 1))
        assert period(utc(2027, 1, 5)) == (utc(2027, 1, 1), utc(2027, 1, 15))
        assert period(utc(2027, 1, 16)) == (utc(2027, 1, 15), utc(2027, 1, 20))
        assert period(utc(2027, 1, 20)) == (utc(2027, 1, 20), utc(2027, 2, 20))


class TestProratedAllowance:
    def test_a_transition_gets_its_share_rounded_down_to_six_digits(self):
        transition = Period(utc(2027, 1, 1), utc(2027, 1, 15), month_end=utc(2027, 2, 1))
        # 1,000 x 14/31 = 451.612903225...
        assert transition.allowance(Decimal(1000)) == Decimal("451.612903")
        assert transition.allowance(Decimal("0.000031")) == Decimal("0.000014")
        assert transition.allowance(Decimal("0.000001")) == Decimal("0")
        assert transition.allowance(None) is None

    def test_a_month_gets_the_whole_allowance(self):
        month = Period(utc(2027, 1, 15), utc(2027, 2, 15))
        assert month.allowance(Decimal("123.456789")) == Decimal("123.456789")


changes = st.lists(
    st.tuples(st.integers(min_value=1, max_value=28), st.integers(0, 60 * 24 * 90)),
    min_size=1,
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(first_anchor=st.integers(min_value=1, max_value=28), steps=changes)
def test_no_change_ever_moves_a_period_that_has_begun(first_anchor, steps):
    """Whatever the changes and whenever they come, every moment up to the
    change keeps its period (the one under way included), periods tile time
    with no gap or overlap, and none is longer than a month.
    """
    anchor_day, history = first_anchor, []
    now = utc(2026, 11, 20, 13)
    for new_anchor_day, minutes_later in steps:
        now += timedelta(minutes=minutes_later)
        before = anchor_segments(history)
        change = anchor_day_change(
            anchor_day=anchor_day, history=history, new_anchor_day=new_anchor_day, now=now
        )
        after = anchor_segments(change.anchor_history)
        for probe in (now, now - timedelta(days=40), now - timedelta(days=3), utc(2026, 1, 1)):
            assert period_containing(
                probe, anchor_day=anchor_day, history=before
            ) == period_containing(probe, anchor_day=new_anchor_day, history=after)
        anchor_day, history = new_anchor_day, change.anchor_history

        period = period_containing(utc(2026, 10, 1), anchor_day=anchor_day, history=after)
        while period.start < now + timedelta(days=120):
            following = period_containing(period.end, anchor_day=anchor_day, history=after)
            assert following.start == period.end
            assert timedelta(days=1) <= period.end - period.start <= timedelta(days=31)
            if change.regular_from is not None and period.start >= change.regular_from:
                assert period == period_containing(period.start, anchor_day=anchor_day)
            period = following


# The promise end to end: API, gate, alerts, the Django admin.


@pytest.fixture
def capped(organization: Organization) -> Organization:
    organization_update(organization=organization, credit_allowance=Decimal(100))
    return organization


@pytest.mark.django_db
class TestAnOrganizationChangesItsAnchorDay:
    def test_an_organization_at_its_allowance_cannot_spend_it_again(self, capped, member, api):
        with time_machine.travel(utc(2026, 12, 10, 12), tick=False):
            assert consume(capped, member, Decimal(100)).allowed
            response = api.patch("/api/v1/organization", {"anchor_day": 15})
            assert response.status_code == 200
            body = response.json()
            assert (body["period_start"], body["period_end"]) == (
                "2026-12-01T00:00:00Z",
                "2027-01-01T00:00:00Z",
            )
            refused = consume(Organization.objects.get(pk=capped.pk), member, Decimal(1))
            assert not refused.allowed
            assert refused.reason == "organization_credits_exhausted"
            assert refused.used == Decimal(100)

    def test_the_next_period_is_shorter_with_a_prorated_allowance(self, capped, member, api):
        with time_machine.travel(utc(2026, 12, 10, 12), tick=False):
            api.patch("/api/v1/organization", {"anchor_day": 15})
        with time_machine.travel(utc(2027, 1, 3), tick=False):
            body = api.get("/api/v1/organization").json()
            assert (body["period_start"], body["period_end"]) == (
                "2027-01-01T00:00:00Z",
                "2027-01-15T00:00:00Z",
            )
            assert body["period_allowance"] == "45.16129"  # 100 x 14/31, rounded down
            assert consume(Organization.objects.get(pk=capped.pk), member, Decimal(45)).allowed
            refused = consume(Organization.objects.get(pk=capped.pk), member, Decimal("0.2"))
            assert refused.reason == "organization_credits_exhausted"
            assert refused.limit == Decimal("45.161290")
            assert refused.resets_at == utc(2027, 1, 15)
            summary = api.get("/api/v1/usage/summary").json()
            assert summary["allowance"] == "45.16129"
            assert summary["period_end"] == "2027-01-15T00:00:00Z"
        with time_machine.travel(utc(2027, 1, 20), tick=False):
            body = api.get("/api/v1/organization").json()
            assert (body["period_start"], body["period_end"]) == (
                "2027-01-15T00:00:00Z",
                "2027-02-15T00:00:00Z",
            )
            assert body["period_allowance"] == "100"

    def test_alerts_already_fired_do_not_fire_again(self, capped, owner, member, api):
        with time_machine.travel(utc(2026, 12, 10, 12), tick=False):
            alert_create(organization=capped, threshold_type="percentage", threshold=Decimal(50))
            consume(capped, member, Decimal(60))
            assert Firing.objects.filter(alert__isnull=False).count() == 1
            api.patch("/api/v1/organization", {"anchor_day": 15})
            consume(Organization.objects.get(pk=capped.pk), member, Decimal(10))
            assert Firing.objects.filter(alert__isnull=False).count() == 1
            assert api.get("/api/v1/alerts").json()["data"][0]["status"] == "in_alarm"

    def test_a_percentage_alert_of_the_shorter_period_is_of_its_allowance(
        self, capped, owner, member
    ):
        with time_machine.travel(utc(2026, 12, 10, 12), tick=False):
            alert_create(organization=capped, threshold_type="percentage", threshold=Decimal(50))
            organization_update(organization=capped, anchor_day=15)
        with time_machine.travel(utc(2027, 1, 3), tick=False):
            organization = Organization.objects.get(pk=capped.pk)
            consume(organization, member, Decimal(22))
            assert not Firing.objects.filter(alert__isnull=False).exists()
            consume(organization, member, Decimal(1))  # 23 >= 50% of 45.16129
            firing = Firing.objects.get(alert__isnull=False)
            assert firing.threshold_credits == Decimal("22.580645")
            assert firing.period_start == utc(2027, 1, 1)

    def test_usage_of_the_period_under_way_stays_in_it(self, capped, member):
        with time_machine.travel(utc(2026, 12, 10, 12), tick=False):
            consume(capped, member, Decimal(30))
            organization_update(organization=capped, anchor_day=15)
            organization = Organization.objects.get(pk=capped.pk)
            period = current_period(organization)
            assert period == Period(utc(2026, 12, 1), utc(2027, 1, 1))
            assert organization_used(organization=organization, period=period) == Decimal(30)
            listed = organizations_with_usage_this_period(Organization.objects.all()).get(
                pk=organization.pk
            )
            assert listed.usage_this_period == Decimal(30)

    def test_the_django_admin_changes_it_the_same_way(self, capped, staff_client):
        with time_machine.travel(utc(2026, 12, 10, 12), tick=False):
            response = staff_client.post(
                change_url(capped), organization_form(capped, anchor_day="15")
            )
            assert response.status_code == 302, response.context["adminform"].form.errors
            organization = Organization.objects.get(pk=capped.pk)
            assert organization.anchor_day == 15
            assert current_period(organization) == Period(utc(2026, 12, 1), utc(2027, 1, 1))
        with time_machine.travel(utc(2027, 1, 3), tick=False):
            assert current_period(organization).end == utc(2027, 1, 15)


@pytest.mark.django_db
def test_the_limits_page_says_what_happens_to_the_periods(capped, owner):
    with time_machine.travel(utc(2026, 12, 10, 12), tick=False):
        organization_update(organization=capped, anchor_day=15)
        page = " ".join(logged_in(owner).get("/settings/limits/").content.decode().split())
        assert (
            "The anchor day changes to day 15: this period ends as planned on Dec 31, then a "
            "shorter period with a prorated allowance runs to Jan 14, 2027."
        ) in page
    with time_machine.travel(utc(2027, 1, 3), tick=False):
        page = " ".join(logged_in(owner).get("/settings/limits/").content.decode().split())
        assert '45.16129 <span class="stat-unit">credits</span>' in page
        assert (
            "This is a shorter period after the anchor day changed: its allowance is 100 "
            "credits prorated, 14 of 31 days."
        ) in page
        assert "Jan 1 \u2013 Jan 14, 2027" in page
