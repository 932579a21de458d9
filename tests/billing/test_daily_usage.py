"""The daily totals (billing.models.DailyUsage): moved with the other totals,
in the same transaction, on ingest and on consume; exact; never counted twice.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
import time_machine

from alerts.services.ingest import UsageInput, usage_ingest
from billing.models import DailyUsage, Meter, OrganizationUsage, UsageEvent, UserLimitPolicy
from billing.periods import period_containing
from billing.selectors import DayUsage, current_period, daily_usage_list, period_days
from tests.factories import MembershipFactory, OrganizationFactory
from tests.fixtures import run_in_threads
from tests.helpers import clock_held_at, consume

pytestmark = pytest.mark.django_db

D = Decimal
NOW = datetime(2026, 3, 20, 15, 0, tzinfo=UTC)


frozen_time = clock_held_at(NOW)


def days_of(organization) -> dict[date, Decimal]:
    return dict(
        DailyUsage.objects.filter(organization=organization)
        .order_by("day")
        .values_list("day", "used")
    )


def event(key: str, credits: str, moment: datetime, **extra) -> UsageInput:
    return UsageInput(idempotency_key=key, credits=D(credits), timestamp=moment, **extra)


# Ingest


def test_ingest_adds_to_the_utc_day_of_each_event_across_periods(member):
    organization = member.organization
    organization.anchor_day = 15
    organization.save()
    user = member.external_id

    usage_ingest(
        organization=organization,
        events=[
            event("a", "1.5", datetime(2026, 2, 14, 23, 59, 59, tzinfo=UTC), user=user),
            event("b", "2", datetime(2026, 2, 15, 0, 0, tzinfo=UTC), user=user),
            event("c", "0.000001", datetime(2026, 2, 15, 23, 59, tzinfo=UTC)),
            event("d", "3", datetime(2026, 3, 19, 10, 0, tzinfo=UTC), user=user, source="workflow"),
            event("e", "4.25", datetime(2026, 3, 19, 22, 0, tzinfo=UTC), user=user),
        ],
    )

    assert days_of(organization) == {
        date(2026, 2, 14): D("1.5"),
        date(2026, 2, 15): D("2.000001"),
        date(2026, 3, 19): D("7.25"),
    }
    assert str(DailyUsage.objects.get(day=date(2026, 2, 15)).used) == "2.000001"
    # The days of a period add up to its total: day and period agree on UTC.
    for period_start, used in OrganizationUsage.objects.values_list("period_start", "used"):
        period = period_containing(period_start, anchor_day=15)
        assert sum(d.used for d in daily_usage_list(organization=organization, period=period)) == (
            used
        )


def test_a_timezone_aware_timestamp_counts_on_its_utc_day(organization):
    from zoneinfo import ZoneInfo

    late_in_new_york = datetime(2026, 3, 18, 22, 30, tzinfo=ZoneInfo("America/New_York"))

    usage_ingest(organization=organization, events=[event("ny", "5", late_in_new_york)])

    assert days_of(organization) == {date(2026, 3, 19): D(5)}


def test_later_batches_add_to_the_same_day(organization):
    moment = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    usage_ingest(organization=organization, events=[event("a", "0.1", moment)])
    usage_ingest(
        organization=organization,
        events=[event(f"b{i}", "0.1", moment) for i in range(9)],
    )

    assert days_of(organization) == {date(2026, 3, 2): D(1)}


def test_repeated_ingest_is_not_counted_twice(member):
    organization = member.organization
    batch = [
        event("k1", "10", datetime(2026, 3, 1, 8, 0, tzinfo=UTC), user=member.external_id),
        event("k2", "2.5", datetime(2026, 3, 3, 8, 0, tzinfo=UTC)),
    ]

    first = usage_ingest(organization=organization, events=batch)
    again = usage_ingest(organization=organization, events=batch)
    mixed = usage_ingest(
        organization=organization,
        events=[batch[0], event("k3", "1", datetime(2026, 3, 3, 9, 0, tzinfo=UTC))],
    )

    assert (first.accepted, again.duplicates, mixed.accepted, mixed.duplicates) == (2, 2, 1, 1)
    assert days_of(organization) == {date(2026, 3, 1): D(10), date(2026, 3, 3): D("3.5")}


def test_the_same_key_twice_in_one_batch_counts_once(organization):
    repeated = event("same", "7", datetime(2026, 3, 5, 12, 0, tzinfo=UTC))

    usage_ingest(organization=organization, events=[repeated, repeated])

    assert days_of(organization) == {date(2026, 3, 5): D(7)}


def test_the_credits_of_another_meter_count_per_day_too(organization):
    Meter.objects.create(key="tokens", name="Tokens", unit="tokens", aggregation="count")
    usage_ingest(
        organization=organization,
        events=[
            event("tokens", "100", datetime(2026, 3, 5, tzinfo=UTC), meter="tokens"),
            event("credits", "1", datetime(2026, 3, 5, tzinfo=UTC)),
        ],
    )

    assert days_of(organization) == {date(2026, 3, 5): D(101)}


def test_organizations_are_kept_apart(organization, other_organization):
    moment = datetime(2026, 3, 5, tzinfo=UTC)
    usage_ingest(organization=organization, events=[event("x", "1", moment)])
    usage_ingest(organization=other_organization, events=[event("x", "2", moment)])

    assert days_of(organization) == {date(2026, 3, 5): D(1)}
    assert days_of(other_organization) == {date(2026, 3, 5): D(2)}


def test_ingest_moves_every_day_in_one_statement(organization, django_assert_max_num_queries):
    days_in_batch = [datetime(2026, 3, day, 12, 0, tzinfo=UTC) for day in range(1, 20)]
    many = [event(f"m{i}", "1", days_in_batch[i % 19]) for i in range(500)]
    one = [event("one", "1", days_in_batch[0])]

    with django_assert_max_num_queries(20) as small:
        usage_ingest(organization=organization, events=one)
    with django_assert_max_num_queries(20) as large:
        usage_ingest(organization=organization, events=many)

    assert len(large.captured_queries) == len(small.captured_queries)
    daily = [q["sql"] for q in large.captured_queries if DailyUsage._meta.db_table in q["sql"]]
    assert len(daily) == 1
    assert sum(days_of(organization).values()) == D(501)


# Consume


def test_an_allowed_consume_adds_to_today(organization, member):
    consume(organization, member, "0.1")
    consume(organization, member, "0.2")

    assert days_of(organization) == {date(2026, 3, 20): D("0.3")}


def test_consumes_on_either_side_of_midnight_land_on_their_days(organization, member):
    with time_machine.travel(datetime(2026, 3, 20, 23, 59, 59, tzinfo=UTC), tick=False):
        consume(organization, member, 1)
    with time_machine.travel(datetime(2026, 3, 21, 0, 0, tzinfo=UTC), tick=False):
        consume(organization, member, 2)

    assert days_of(organization) == {date(2026, 3, 20): D(1), date(2026, 3, 21): D(2)}


def test_a_consume_refused_for_the_user_limit_adds_nothing(organization, member):
    UserLimitPolicy.objects.create(organization=organization, enabled=True, default_limit=D(10))

    assert consume(organization, member, 8).allowed
    assert not consume(organization, member, 5).allowed

    assert days_of(organization) == {date(2026, 3, 20): D(8)}


def test_a_consume_refused_by_the_organization_adds_nothing(organization, member):
    # The member's increment is made, then undone when the organization
    # refuses; the day total is only moved after both have let it through.
    organization.credit_allowance = D(10)
    organization.save()

    assert consume(organization, member, 8).allowed
    assert not consume(organization, member, 5).allowed

    assert days_of(organization) == {date(2026, 3, 20): D(8)}
    assert UsageEvent.objects.count() == 1


def test_a_repeated_consume_key_is_not_counted_twice(organization, member):
    for _ in range(3):
        assert consume(organization, member, 5, key="run-1").allowed

    assert days_of(organization) == {date(2026, 3, 20): D(5)}


def test_ingest_and_consume_add_to_the_same_day(organization, member):
    consume(organization, member, 5)
    usage_ingest(
        organization=organization,
        events=[event("later", "2.5", datetime(2026, 3, 20, 9, 0, tzinfo=UTC))],
    )

    assert days_of(organization) == {date(2026, 3, 20): D("7.5")}


# Reading them


def test_daily_usage_list_gives_every_day_with_zeros(organization):
    usage_ingest(
        organization=organization,
        events=[
            event("a", "3", datetime(2026, 3, 2, tzinfo=UTC)),
            event("b", "4", datetime(2026, 2, 28, tzinfo=UTC)),  # the period before
        ],
    )
    period = current_period(organization)

    days = daily_usage_list(organization=organization, period=period, until=date(2026, 3, 4))

    assert days == [
        DayUsage(date(2026, 3, 1), D(0)),
        DayUsage(date(2026, 3, 2), D(3)),
        DayUsage(date(2026, 3, 3), D(0)),
        DayUsage(date(2026, 3, 4), D(0)),
    ]
    assert len(daily_usage_list(organization=organization, period=period)) == 31


def test_period_days_follow_the_anchor_day():
    period = period_containing(datetime(2026, 2, 20, tzinfo=UTC), anchor_day=15)

    days = period_days(period)

    assert (days[0], days[-1], len(days)) == (date(2026, 2, 15), date(2026, 3, 14), 28)


# Concurrency: the day row is taken after the organization row, by everyone.


@pytest.mark.django_db(transaction=True)
def test_concurrent_consumes_and_ingests_keep_the_day_exact():
    organization = OrganizationFactory(credit_allowance=D(50))
    members = MembershipFactory.create_batch(4, organization=organization)

    def work(index: int) -> None:
        if index % 3 == 0:
            usage_ingest(
                organization=organization,
                events=[event(f"i{index}", "1", NOW, user=members[index % 4].external_id)],
            )
        else:
            consume(organization, members[index % 4], 5, key=f"c{index}")

    run_in_threads(24, work)

    period_total = OrganizationUsage.objects.get(organization=organization).used
    assert D(8) < period_total < D(88)  # every ingest counted, some consumes refused
    assert days_of(organization) == {date(2026, 3, 20): period_total}
    assert sum(UsageEvent.objects.values_list("credits", flat=True)) == period_total
