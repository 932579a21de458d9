"""Properties of billing periods (billing/periods.py), for any aware moment,
in any time zone, and any anchor day 1-28.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.periods import Period, period_after, period_containing

anchor_days = st.integers(min_value=1, max_value=28)
naive_moments = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2199, 12, 1))
utc_moments = naive_moments.map(lambda moment: moment.replace(tzinfo=UTC))
fixed_offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
# Named zones too: half-hour offsets, daylight saving time, and the ambiguous hour (fold).
zones = st.one_of(fixed_offsets, st.timezones())
aware_moments = st.builds(
    lambda moment, zone: moment.astimezone(zone), utc_moments, zones
) | st.datetimes(
    min_value=datetime(1971, 1, 1),
    max_value=datetime(2199, 12, 1),
    timezones=zones,
    allow_imaginary=False,
)
MICROSECOND = timedelta(microseconds=1)


def _months_apart(earlier: datetime, later: datetime) -> int:
    return (later.year - earlier.year) * 12 + later.month - earlier.month


@given(moment=aware_moments, anchor_day=anchor_days)
def test_the_period_contains_the_moment_and_starts_on_the_anchor_day_at_midnight_utc(
    moment: datetime, anchor_day: int
) -> None:
    period = period_containing(moment, anchor_day=anchor_day)

    assert period.start <= moment < period.end
    assert moment in period
    for edge in (period.start, period.end):
        assert edge.utcoffset() == timedelta(0)
        assert (edge.day, edge.hour, edge.minute, edge.second, edge.microsecond) == (
            anchor_day,
            0,
            0,
            0,
            0,
        )
    assert _months_apart(period.start, period.end) == 1


@given(moment=aware_moments, anchor_day=anchor_days)
def test_a_period_lasts_its_calendar_month(moment: datetime, anchor_day: int) -> None:
    period = period_containing(moment, anchor_day=anchor_day)

    length = period.end - period.start
    assert length.seconds == length.microseconds == 0
    assert 28 <= length.days <= 31
    assert length.days == calendar.monthrange(period.start.year, period.start.month)[1]


@given(moment=aware_moments, anchor_day=anchor_days)
def test_the_end_is_the_next_periods_start(moment: datetime, anchor_day: int) -> None:
    period = period_containing(moment, anchor_day=anchor_day)
    following = period_after(period, anchor_day=anchor_day)

    assert following.start == period.end
    assert period_containing(period.end, anchor_day=anchor_day) == following
    assert period_containing(period.end - MICROSECOND, anchor_day=anchor_day) == period
    assert period_containing(period.start, anchor_day=anchor_day) == period
    assert period_containing(period.start - MICROSECOND, anchor_day=anchor_day).end == period.start


@given(first=aware_moments, second=aware_moments, anchor_day=anchor_days)
def test_periods_tile_time_without_gaps_or_overlaps(
    first: datetime, second: datetime, anchor_day: int
) -> None:
    """Walking period_after from the earlier moment's period reaches the later
    moment's period, each period starting where the last ended; two moments
    share a period exactly when they fall in the same one.
    """
    earlier, later = sorted([first, second])
    start = period_containing(earlier, anchor_day=anchor_day)
    end = period_containing(later, anchor_day=anchor_day)
    assert start.start <= end.start  # monotonic

    steps = _months_apart(start.start, end.start)
    period = start
    for _ in range(steps):
        following = period_after(period, anchor_day=anchor_day)
        assert following.start == period.end
        period = following
    assert period == end
    assert (start == end) == (later < start.end)


@given(moment=utc_moments, anchor_day=anchor_days, zone=zones)
def test_any_offset_gives_the_period_of_its_utc_instant(
    moment: datetime, anchor_day: int, zone: timezone
) -> None:
    local = moment.astimezone(zone)

    assert local == moment
    assert period_containing(local, anchor_day=anchor_day) == period_containing(
        moment, anchor_day=anchor_day
    )


@given(moment=aware_moments, anchor_day=anchor_days)
def test_a_period_is_found_again_from_any_moment_within_it(
    moment: datetime, anchor_day: int
) -> None:
    period = period_containing(moment, anchor_day=anchor_day)
    for inside in (period.start, period.start + (period.end - period.start) / 2, moment):
        assert period_containing(inside, anchor_day=anchor_day) == period
    assert isinstance(period, Period)


@given(
    moment=aware_moments,
    anchor_day=st.integers().filter(lambda day: not 1 <= day <= 28),
)
def test_anchor_days_outside_1_to_28_are_refused(moment: datetime, anchor_day: int) -> None:
    with pytest.raises(ValueError, match="anchor_day"):
        period_containing(moment, anchor_day=anchor_day)


@given(moment=naive_moments, anchor_day=anchor_days)
def test_naive_moments_are_refused(moment: datetime, anchor_day: int) -> None:
    with pytest.raises(ValueError, match="aware"):
        period_containing(moment, anchor_day=anchor_day)
