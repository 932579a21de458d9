"""`{% load credits %}` then `{{ value|credits }}`: exact credits with their
thousands grouped (12,500 and 1,234.5), "—" for none. For people reading a
page only: the API and the CSV export write plain numbers (`format_credits`).
"""

from __future__ import annotations

from decimal import Decimal

from django import template

from config.credits import readable_credits
from config.money import readable_money

register = template.Library()

NO_VALUE = "—"


@register.filter(name="credits")
def credits_filter(value: Decimal | int | str | None) -> str:
    """5, 0.1, 1,234.5: every digit `format_credits` writes, the thousands
    grouped; "—" when there is no value (no limit, no allowance). Floats are
    refused upstream, so none arrive here.
    """
    if value is None or value == "":
        return NO_VALUE
    return readable_credits(value)


@register.filter(name="money")
def money_filter(amount: Decimal | None, currency: str) -> str:
    """An amount with its currency's symbol, exact: $12.50, $0.000123."""
    if amount is None or amount == "":
        return NO_VALUE
    return readable_money(amount, currency)


@register.filter(name="grouped")
def grouped_filter(value: int | None) -> str:
    """A count with its thousands grouped: 2,000 members."""
    if value is None or value == "":
        return NO_VALUE
    return f"{int(value):,}"


@register.filter(name="share")
def share_filter(percent: int | None, part: Decimal | int | None = None) -> str:
    """A whole percent as `percent_of` rounds it (down), written with its sign;
    "<1%" when `part` is more than nothing but rounds down to 0, so that a
    source that was used never reads as 0% and the column still adds up.
    """
    if percent is None:
        return NO_VALUE
    if percent == 0 and part:
        return "<1%"
    return f"{percent:,}%"
