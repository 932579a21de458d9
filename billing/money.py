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
from billing.balance import credit_balance_get
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
