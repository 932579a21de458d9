"""Money (SPEC §11): a price per credit, a currency, and exact amounts.

An amount is credits times price, both exact decimals with at most 6 fractional
digits, so the product is exact too (at most 12): nothing is rounded until
a person reads it, and then only to the currency's usual digits when that
loses nothing (Babel's `decimal_quantization=False`: $12.50, $0.000123).
Currency codes are ISO 4217's, as Babel (CLDR) knows them.
"""

from __future__ import annotations

from decimal import Decimal
from functools import cache
from typing import Annotated, Any

from babel.numbers import format_currency, get_currency_symbol, list_currencies
from django.db import models
from pydantic import AfterValidator, PlainSerializer, WithJsonSchema

from config.credits import CreditsOrZero, format_credits

DEFAULT_CURRENCY = "USD"


@cache
def currencies() -> frozenset[str]:
    return frozenset(list_currencies())


def currency_error(code: str) -> str | None:
    """Why `code` is not a currency (None if it is one)."""
    if code not in currencies():
        return "must be an ISO 4217 currency code in capitals, such as USD or EUR"
    return None


def amount_of(credits: Decimal, price: Decimal) -> Decimal:
    """What `credits` cost at `price` per credit: exact."""
    return credits * price


def format_amount(amount: Decimal) -> str:
    """An amount as the API gives it: the shortest exact decimal string."""
    return format_credits(amount)


def currency_symbol(currency: str) -> str:
    """The currency's symbol as people read it ($, €, CHF)."""
    return get_currency_symbol(currency, locale="en_US")


def readable_money(amount: Decimal, currency: str) -> str:
    """An amount for people: the currency's symbol, grouped, never rounded."""
    return format_currency(amount, currency, locale="en_US", decimal_quantization=False)


def _currency(code: str) -> str:
    error = currency_error(code)
    if error:
        raise ValueError(error)
    return code


# A price per credit: a decimal >= 0 with at most 6 fractional digits.
Price = Annotated[
    CreditsOrZero,
    WithJsonSchema(
        {
            "oneOf": [{"type": "string", "pattern": r"^\d+(\.\d{1,6})?$"}, {"type": "number"}],
            "description": "A price per credit: a decimal >= 0 with at most 6 fractional digits.",
        },
        mode="validation",
    ),
]
Currency = Annotated[
    str,
    AfterValidator(_currency),
    WithJsonSchema(
        {"type": "string", "pattern": "^[A-Z]{3}$", "description": "ISO 4217, such as USD."},
        mode="validation",
    ),
]
AmountOut = Annotated[
    Decimal,
    PlainSerializer(format_amount, return_type=str, when_used="always"),
    WithJsonSchema(
        {"type": "string", "pattern": r"^\d+(\.\d+)?$", "description": "An exact amount of money."},
        mode="serialization",
    ),
]


MONEY_MAX_DIGITS = 32
MONEY_DECIMAL_PLACES = 12  # credits (6) x price (6): every digit of a product is kept


def money_field(**kwargs: Any) -> models.DecimalField[Any, Any]:
    """An amount: credits times a price, exact."""
    return models.DecimalField(
        max_digits=MONEY_MAX_DIGITS, decimal_places=MONEY_DECIMAL_PLACES, **kwargs
    )
