"""Billing periods: calendar months that start on the organization's anchor
day (1-28) at 00:00 UTC. Periods are half-open: [start, end), and `end` is
the next period's start. Day 28 at most, so every month has the anchor day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime

    def __contains__(self, moment: datetime) -> bool:
        return self.start <= moment < self.end

    @property
    def last_day(self) -> date:
        """The period's last (UTC) day, as people name it: `end` is the next one's start."""
        return (self.end - timedelta(days=1)).date()


def _month_start(year: int, month: int, anchor_day: int) -> datetime:
    return datetime(year, month, anchor_day, tzinfo=UTC)


def _add_months(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + months
    return index // 12, index % 12 + 1


def period_containing(moment: datetime, *, anchor_day: int) -> Period:
    if not 1 <= anchor_day <= 28:
        raise ValueError(f"anchor_day must be between 1 and 28, not {anchor_day}")
    if moment.tzinfo is None:
        raise ValueError("moment must be timezone-aware")
    moment = moment.astimezone(UTC)
    year, month = moment.year, moment.month
    if moment.day < anchor_day:
        year, month = _add_months(year, month, -1)
    next_year, next_month = _add_months(year, month, 1)
    return Period(
        start=_month_start(year, month, anchor_day),
        end=_month_start(next_year, next_month, anchor_day),
    )


def period_after(period: Period, *, anchor_day: int) -> Period:
    return period_containing(period.end, anchor_day=anchor_day)
