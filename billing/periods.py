"""Billing periods: calendar months that start on the organization's anchor
day (1-28) at 00:00 UTC. Periods are half-open: [start, end), and `end` is
the next period's start. Day 28 at most, so every month has the anchor day.

Changing the anchor day never touches the period under way (SPEC §16): it
keeps its end, and the next period runs from there to the next occurrence
of the new anchor day (a *transition* period, shorter than a month, whose
allowance is prorated). The organization keeps the anchor days of the past
as its `anchor_history`: a list of `{"anchor_day", "until"}`, oldest first,
each the anchor day that governed periods ending at or before `until`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

ALLOWANCE_QUANTUM = 10**6  # allowances keep 6 fractional digits


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime
    # A transition period (after an anchor day change) is shorter than the
    # month that would have started with it; this is that month's end.
    month_end: datetime | None = None

    def __contains__(self, moment: datetime) -> bool:
        return self.start <= moment < self.end

    @property
    def last_day(self) -> date:
        """The period's last (UTC) day, as people name it: `end` is the next one's start."""
        return (self.end - timedelta(days=1)).date()

    @property
    def is_transition(self) -> bool:
        return self.month_end is not None

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    @property
    def month_days(self) -> int:
        """The days of the month period that would have started with this one."""
        return ((self.month_end or self.end) - self.start).days

    def allowance(self, monthly: Decimal | None) -> Decimal | None:
        """The allowance of this period: the monthly one, prorated by length
        for a transition period (6 fractional digits, rounded down, exactly).
        """
        if monthly is None or self.month_end is None:
            return monthly
        micro_credits = int(monthly * ALLOWANCE_QUANTUM) * self.days // self.month_days
        return Decimal(micro_credits).scaleb(-6)


@dataclass(frozen=True)
class AnchorSegment:
    """Periods ending at or before `until` followed `anchor_day`."""

    anchor_day: int
    until: datetime


class Anchored(Protocol):
    anchor_day: int
    anchor_history: Any


def _month_start(year: int, month: int, anchor_day: int) -> datetime:
    return datetime(year, month, anchor_day, tzinfo=UTC)


def _add_months(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + months
    return index // 12, index % 12 + 1


def _validate(moment: datetime, anchor_day: int) -> datetime:
    if not 1 <= anchor_day <= 28:
        raise ValueError(f"anchor_day must be between 1 and 28, not {anchor_day}")
    if moment.tzinfo is None:
        raise ValueError("moment must be timezone-aware")
    return moment.astimezone(UTC)


def _monthly_period(moment: datetime, anchor_day: int) -> Period:
    year, month = moment.year, moment.month
    if moment.day < anchor_day:
        year, month = _add_months(year, month, -1)
    next_year, next_month = _add_months(year, month, 1)
    return Period(
        start=_month_start(year, month, anchor_day),
        end=_month_start(next_year, next_month, anchor_day),
    )


def _segment_period(moment: datetime, anchor_day: int, since: datetime | None) -> Period:
    """The period containing `moment` among those following `anchor_day`
    from `since` (a boundary of the previous anchor day) on.
    """
    if since is None:
        return _monthly_period(moment, anchor_day)
    first_end = _monthly_period(since, anchor_day).end  # the next occurrence of the day
    if moment < first_end:
        year, month = _add_months(since.year, since.month, 1)
        return Period(start=since, end=first_end, month_end=since.replace(year=year, month=month))
    return _monthly_period(moment, anchor_day)


def period_containing(
    moment: datetime, *, anchor_day: int, history: Sequence[AnchorSegment] = ()
) -> Period:
    """The billing period that contains `moment`, for an organization whose
    anchor day is `anchor_day` now and followed `history` before.
    """
    moment = _validate(moment, anchor_day)
    since: datetime | None = None
    for segment in history:
        if moment < segment.until:
            return _segment_period(moment, segment.anchor_day, since)
        since = segment.until
    return _segment_period(moment, anchor_day, since)


def period_after(
    period: Period, *, anchor_day: int, history: Sequence[AnchorSegment] = ()
) -> Period:
    return period_containing(period.end, anchor_day=anchor_day, history=history)


def anchor_segments(raw: Any) -> tuple[AnchorSegment, ...]:
    """The stored `anchor_history` (JSON) as segments."""
    return tuple(
        AnchorSegment(
            anchor_day=int(entry["anchor_day"]), until=datetime.fromisoformat(entry["until"])
        )
        for entry in raw or ()
    )


def organization_period(organization: Anchored, moment: datetime) -> Period:
    """The period of `organization` that contains `moment`."""
    return period_containing(
        moment,
        anchor_day=organization.anchor_day,
        history=anchor_segments(organization.anchor_history),
    )


@dataclass(frozen=True)
class AnchorChange:
    """What an organization stores when its anchor day changes."""

    anchor_history: list[dict[str, Any]]
    # From here on periods follow the anchor day month by month (None: they
    # always have); before it lie the period under way and the transition.
    regular_from: datetime | None


def anchor_day_change(
    *, anchor_day: int, history: Any, new_anchor_day: int, now: datetime
) -> AnchorChange:
    """Change the anchor day at `now` without touching the period under way:
    it keeps its end, where the new anchor day's periods begin. Changed again
    before that end, only the last choice counts; changed back, nothing changes.
    """
    segments = list(anchor_segments(history))
    current = period_containing(now, anchor_day=anchor_day, history=segments)
    if segments and segments[-1].until == current.end:
        # An earlier change takes effect at the end of this period: replace it.
        anchor_day = segments.pop().anchor_day
    if new_anchor_day != anchor_day:
        segments.append(AnchorSegment(anchor_day=anchor_day, until=current.end))
    stored = [
        {"anchor_day": segment.anchor_day, "until": segment.until.isoformat()}
        for segment in segments
    ]
    if not segments:
        return AnchorChange(anchor_history=stored, regular_from=None)
    transition = period_containing(segments[-1].until, anchor_day=new_anchor_day, history=segments)
    return AnchorChange(anchor_history=stored, regular_from=transition.end)
