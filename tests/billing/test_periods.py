from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.periods import period_after, period_containing

moments = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
anchor_days = st.integers(min_value=1, max_value=28)


def test_calendar_month_by_default():
    period = period_containing(datetime(2026, 2, 14, 9, 30, tzinfo=UTC), anchor_day=1)
    assert period.start == datetime(2026, 2, 1, tzinfo=UTC)
    assert period.end == datetime(2026, 3, 1, tzinfo=UTC)


def test_anchor_day_before_the_anchor_falls_in_the_previous_month():
    period = period_containing(datetime(2026, 3, 14, tzinfo=UTC), anchor_day=15)
    assert (period.start, period.end) == (
        datetime(2026, 2, 15, tzinfo=UTC),
        datetime(2026, 3, 15, tzinfo=UTC),
    )


def test_the_start_instant_belongs_to_the_new_period():
    period = period_containing(datetime(2026, 3, 15, tzinfo=UTC), anchor_day=15)
    assert period.start == datetime(2026, 3, 15, tzinfo=UTC)
    earlier = period_containing(
        datetime(2026, 3, 15, tzinfo=UTC) - timedelta(microseconds=1), anchor_day=15
    )
    assert earlier.end == period.start


def test_year_end():
    period = period_containing(datetime(2026, 1, 10, tzinfo=UTC), anchor_day=28)
    assert (period.start, period.end) == (
        datetime(2025, 12, 28, tzinfo=UTC),
        datetime(2026, 1, 28, tzinfo=UTC),
    )
    december = period_containing(datetime(2026, 12, 31, 23, 59, tzinfo=UTC), anchor_day=1)
    assert december.end == datetime(2027, 1, 1, tzinfo=UTC)


def test_february_of_a_leap_year():
    period = period_containing(datetime(2028, 2, 29, 12, tzinfo=UTC), anchor_day=28)
    assert (period.start, period.end) == (
        datetime(2028, 2, 28, tzinfo=UTC),
        datetime(2028, 3, 28, tzinfo=UTC),
    )


def test_other_timezones_are_read_in_utc():
    # 2026-03-01 01:00 at UTC+2 is still February in UTC.
    moment = datetime(2026, 3, 1, 1, 0, tzinfo=timezone(timedelta(hours=2)))
    assert period_containing(moment, anchor_day=1).start == datetime(2026, 2, 1, tzinfo=UTC)


@pytest.mark.parametrize("anchor_day", [0, 29, -1])
def test_anchor_day_out_of_range(anchor_day):
    with pytest.raises(ValueError, match="anchor_day"):
        period_containing(datetime(2026, 1, 1, tzinfo=UTC), anchor_day=anchor_day)


def test_naive_moments_are_refused():
    with pytest.raises(ValueError, match="aware"):
        period_containing(datetime(2026, 1, 1), anchor_day=1)


@given(moment=moments, anchor_day=anchor_days)
def test_a_period_contains_its_moment_and_starts_on_the_anchor(moment, anchor_day):
    period = period_containing(moment, anchor_day=anchor_day)
    assert period.start <= moment < period.end
    assert moment in period
    assert period.start.day == period.end.day == anchor_day
    assert period.start.time() == period.end.time() == datetime.min.time()
    assert 28 <= (period.end - period.start).days <= 31


@given(moment=moments, anchor_day=anchor_days)
def test_periods_tile_time_without_gaps_or_overlaps(moment, anchor_day):
    period = period_containing(moment, anchor_day=anchor_day)
    following = period_after(period, anchor_day=anchor_day)
    assert following.start == period.end
    assert (
        period_containing(period.end - timedelta(microseconds=1), anchor_day=anchor_day) == period
    )
    months_apart = (
        (following.start.year - period.start.year) * 12 + following.start.month - period.start.month
    )
    assert months_apart == 1
