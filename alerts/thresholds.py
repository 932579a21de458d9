"""The crossing rule every alert asks (alerts/services/rules.py for the
organization's alerts, alerts/services/platform_alerts.py for the platform's),
and a percentage of an allowance in credits: one definition of each.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from billing.rules import over_budget
from config.credits import CREDIT_QUANTUM


def crossed(before: Decimal | None, after: Decimal, threshold: Decimal | None) -> bool:
    """Whether a value that went from `before` to `after` crossed `threshold`:
    before < threshold <= after. `before` None: nothing was counted against
    the threshold yet, so being at or past it is enough. No threshold (a
    percentage of an allowance there is not): never.
    """
    return over_budget(after, threshold) and (before is None or not over_budget(before, threshold))


def percent_of_allowance(percent: Decimal, allowance: Decimal | None) -> Decimal | None:
    """`percent` of the allowance in credits; None without an allowance."""
    if allowance is None:
        return None
    return (allowance * percent / 100).quantize(CREDIT_QUANTUM, rounding=ROUND_HALF_UP)
