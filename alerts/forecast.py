"""Forecast alerts (SPEC §15): the usage an organization is on pace to reach
by its period's end, from what it used so far and the time that passed.

    projected = used / elapsed * the period's length

Only once the pace says something: at least 3 days, or 10 % of the period,
have passed (whichever comes first). Worked out from what a write already
has in hand (its usage after, its period, the moment), so a forecast alert
costs a write no query.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext

from billing.periods import Period
from config.credits import CREDIT_QUANTUM

MIN_ELAPSED = timedelta(days=3)
MIN_ELAPSED_SHARE = Decimal("0.1")


@dataclass(frozen=True)
class Forecast:
    used: Decimal
    projected: Decimal  # at the period's end, at this pace
    elapsed: timedelta
    period: Period

    def reached_at(self, credits: Decimal) -> datetime | None:
        """When usage reaches `credits` at this pace; None at no pace at all."""
        if self.used <= 0:
            return None
        with localcontext() as context:
            context.prec = 60
            microseconds = _microseconds(self.elapsed) * credits / self.used
        return self.period.start + timedelta(microseconds=int(microseconds))


def forecast(period: Period, now: datetime, used: Decimal) -> Forecast | None:
    """The forecast of `period` at `now` with `used` so far; None before the
    pace is worth reading (or outside the period).
    """
    elapsed = now - period.start
    length = period.end - period.start
    if not timedelta(0) < elapsed <= length:
        return None
    elapsed_us, length_us = _microseconds(elapsed), _microseconds(length)
    if elapsed < MIN_ELAPSED and Decimal(elapsed_us) < MIN_ELAPSED_SHARE * length_us:
        return None
    with localcontext() as context:
        context.prec = 60  # exact to the 6th fractional digit, whatever the usage
        projected = (used * length_us / elapsed_us).quantize(CREDIT_QUANTUM, ROUND_HALF_UP)
    return Forecast(used=used, projected=projected, elapsed=elapsed, period=period)


def _microseconds(span: timedelta) -> int:
    return span // timedelta(microseconds=1)
