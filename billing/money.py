"""What the period's usage costs (SPEC §11), for an organization with a
`credit_price`: **spend** is all of its usage at the price (before the
allowance and grants); the **invoice total** is its overage at the price
(after them: what no allowance or grant covered, docs/credits.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from accounts.models import Organization
from billing.balance import credit_balance_get, period_overage
from billing.periods import Period
from config.money import amount_of


@dataclass(frozen=True)
class MoneyThisPeriod:
    price: Decimal
    currency: str
    used: Decimal
    overage: Decimal

    @property
    def spend(self) -> Decimal:
        return amount_of(self.used, self.price)

    @property
    def invoice_total(self) -> Decimal:
        return amount_of(self.overage, self.price)


def money_this_period(*, organization: Organization, now: datetime) -> MoneyThisPeriod | None:
    """Spend and invoice total of the current period; None without a price."""
    if organization.credit_price is None:
        return None
    figures = credit_balance_get(organization=organization, now=now)
    return MoneyThisPeriod(
        price=organization.credit_price,
        currency=organization.currency,
        used=figures.used,
        overage=figures.overage,
    )


@dataclass(frozen=True)
class MoneyChange:
    """What a period costs an organization with a price, either side of a
    write: usage and overage in credits (`*_before` None: nothing was counted
    against the thresholds yet, as for a change of configuration). What the
    `spend` and `invoice_total` alerts watch (alerts/services/rules.py).
    """

    price: Decimal
    currency: str
    used_before: Decimal | None
    used_after: Decimal
    overage_before: Decimal | None
    overage_after: Decimal

    def spend(self) -> tuple[Decimal | None, Decimal]:
        """Usage x price, before and after."""
        return self._priced(self.used_before), amount_of(self.used_after, self.price)

    def invoice_total(self) -> tuple[Decimal | None, Decimal]:
        """Overage x price, before and after."""
        return self._priced(self.overage_before), amount_of(self.overage_after, self.price)

    def _priced(self, credits: Decimal | None) -> Decimal | None:
        return None if credits is None else amount_of(credits, self.price)


def money_as_it_stands(*, organization: Organization, period: Period) -> MoneyChange | None:
    """The period's usage and overage as they stand, for a change of
    configuration (before: None); None without a price.
    """
    if organization.credit_price is None:
        return None
    used, overage = period_overage(organization=organization, period=period)
    return MoneyChange(
        price=organization.credit_price,
        currency=organization.currency,
        used_before=None,
        used_after=used,
        overage_before=None,
        overage_after=overage,
    )
